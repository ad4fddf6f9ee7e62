"""Dead letters as JSON Lines: what ``dlq export`` writes and ``dlq import`` reads.

One dead letter per line, every column, lossless: the payload is kept as the
exact text it was (``"payload"``) when it is UTF-8, else as base64
(``"payload_base64"``), so bytes come back identical; times are ISO-8601 UTC::

    {"id": "0193…", "function": "ingest", "payload": "{\\"n\\": 1}", "dead_at": "2026-…Z", …}

Reading a line checks every field and names the line and field that is wrong.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from broker.errors import UsageError
from broker.models import Condition, Origin
from broker.store.history import DeadLetterRow
from broker.times import iso

FORMAT = "eventwire.dead_letter/1"

_TEXT = ("id", "invocation_id", "request_id", "function")
_OPTIONAL_TEXT = ("error_type", "error_message", "redriven_as", "redrive_to")
_TIMES = ("first_enqueued_at", "dead_at")
_OPTIONAL_TIMES = ("redriven_at",)


def to_line(row: DeadLetterRow) -> str:
    """One dead letter as one line of JSON (without the newline)."""
    data: dict[str, Any] = {
        "format": FORMAT,
        "id": row.id,
        "invocation_id": row.invocation_id,
        "request_id": row.request_id,
        "function": row.function,
        "origin": row.origin.value,
        "source": dict(row.source),
        "condition": row.condition.value,
        "error_type": row.error_type,
        "error_message": row.error_message,
        "attempts": row.attempts,
        "first_enqueued_at": iso(row.first_enqueued_at),
        "dead_at": iso(row.dead_at),
        "redriven_at": iso(row.redriven_at) if row.redriven_at else None,
        "redriven_as": row.redriven_as,
        "redrive_to": row.redrive_to,
    }
    try:
        data["payload"] = row.payload.decode("utf-8")
    except UnicodeDecodeError:
        data["payload_base64"] = base64.b64encode(row.payload).decode("ascii")
    return json.dumps(data, ensure_ascii=False, separators=(",", ":"))


def read_lines(lines: Iterable[str], source: str) -> list[dict[str, Any]]:
    """``dead_letters`` rows from JSON Lines; blank lines are skipped, repeats kept once.

    Raises :class:`UsageError` naming ``source:line: field`` for a bad line.
    """
    rows: dict[str, dict[str, Any]] = {}
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            data = json.loads(line)
        except (ValueError, RecursionError) as exc:
            raise UsageError(f"{source}:{number}: not JSON: {exc}") from None
        if not isinstance(data, dict):
            raise UsageError(f"{source}:{number}: expected a JSON object per line")
        row = from_line(data, f"{source}:{number}")
        rows.setdefault(row["id"], row)
    return list(rows.values())


def from_line(data: Mapping[str, Any], where: str) -> dict[str, Any]:
    """One line's object as a ``dead_letters`` row."""

    def fail(field: str, expected: str) -> UsageError:
        return UsageError(f"{where}: {field}: expected {expected}, got {data.get(field)!r}")

    if data.get("format", FORMAT) != FORMAT:
        raise fail("format", repr(FORMAT))
    row: dict[str, Any] = {}
    for name in _TEXT:
        if not isinstance(data.get(name), str) or not data[name]:
            raise fail(name, "a non-empty string")
        row[name] = data[name]
    for name in _OPTIONAL_TEXT:
        if data.get(name) is not None and not isinstance(data[name], str):
            raise fail(name, "a string or null")
        row[name] = data.get(name)
    for name in (*_TIMES, *_OPTIONAL_TIMES):
        optional = name in _OPTIONAL_TIMES and data.get(name) is None
        row[name] = None if optional else _time(data.get(name), name, fail)
    row["origin"] = _choice(data, "origin", [o.value for o in Origin], fail)
    row["condition"] = _choice(data, "condition", [c.value for c in Condition], fail)
    attempts = data.get("attempts")
    if not isinstance(attempts, int) or isinstance(attempts, bool) or attempts < 0:
        raise fail("attempts", "a whole number")
    row["attempts"] = attempts
    source = data.get("source", {})
    if not isinstance(source, dict):
        raise fail("source", "an object")
    row["source"] = source
    row["payload"] = _payload(data, where)
    return row


def _choice(data: Mapping[str, Any], name: str, allowed: list[str], fail: Any) -> str:
    value = data.get(name)
    if value not in allowed:
        raise fail(name, "one of " + ", ".join(allowed))
    return str(value)


def _payload(data: Mapping[str, Any], where: str) -> bytes:
    if isinstance(data.get("payload"), str):
        return bytes(data["payload"].encode("utf-8"))
    if isinstance(data.get("payload_base64"), str):
        try:
            return base64.b64decode(data["payload_base64"], validate=True)
        except binascii.Error:
            raise UsageError(f"{where}: payload_base64: not base64") from None
    raise UsageError(f"{where}: payload: expected the payload as text, or payload_base64")


def _time(value: Any, name: str, fail: Any) -> datetime:
    if not isinstance(value, str):
        raise fail(name, "an ISO-8601 time")
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise fail(name, "an ISO-8601 time") from None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)
