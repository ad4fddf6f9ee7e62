"""Rendering store rows for people (Rich tables) and for scripts (JSON).

In JSON, ids are whole, times are ISO-8601 UTC, and a payload is the JSON it
holds when it is UTF-8 JSON, else ``{"$base64": "..."}``. In tables, ids are
shortened to the shortest prefix (at least 8 characters) that tells the rows
apart: UUIDv7 ids made within the same minute share their first 8 characters.
"""

from __future__ import annotations

import base64
import dataclasses
import enum
import json
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from rich.console import Console, Group, RenderableType
from rich.json import JSON
from rich.measure import Measurement
from rich.table import Column, Table
from rich.text import Text

from broker.cli.common import console
from broker.store.history import MIN_PREFIX, AttemptRow
from broker.times import iso

BASE64_MARKER = "$base64"

STATE_STYLES = {
    "pending": "yellow",
    "running": "cyan",
    "succeeded": "green",
    "failed": "red",
    "redriven": "green",
    "already_redriven": "dim",
    "not_found": "red",
}


def when(value: datetime | None) -> str:
    """A time for a table cell: ``2024-05-01 12:00:00Z``, or ``-``."""
    if value is None:
        return "-"
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def payload_value(data: bytes) -> Any:
    """The JSON a payload holds, or ``{"$base64": ...}`` when it is not UTF-8 JSON."""
    decoded, value = _decode(data)
    return value if decoded else {BASE64_MARKER: base64.b64encode(data).decode("ascii")}


def payload_view(data: bytes) -> RenderableType:
    """A payload for the terminal: indented JSON, or base64 marked as such."""
    decoded, value = _decode(data)
    if decoded:
        return JSON.from_data(value)
    encoded = base64.b64encode(data).decode("ascii")
    return Text(f"(not UTF-8 JSON; {len(data)} bytes as base64) {encoded}")


def _decode(data: bytes) -> tuple[bool, Any]:
    try:
        return True, json.loads(data.decode("utf-8"))
    except (ValueError, RecursionError):  # UnicodeDecodeError and JSONDecodeError alike
        return False, None


def to_json(value: Any) -> Any:
    """``value`` (rows, lists of rows, enums, bytes, datetimes) as plain JSON data."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_json(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, bytes):
        return payload_value(value)
    if isinstance(value, datetime):
        return iso(value)
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, Mapping):
        return {str(key): to_json(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [to_json(item) for item in value]
    return value


def short_ids(ids: Iterable[str | None], min_len: int = MIN_PREFIX) -> dict[str, str]:
    """For each id, its shortest prefix of at least ``min_len`` characters unique among ``ids``."""
    ordered = sorted({id for id in ids if id})
    shortest: dict[str, str] = {}
    for i, id in enumerate(ordered):
        length = min_len
        for other in ordered[max(i - 1, 0) : i + 2]:
            if other != id:
                length = max(length, _common_prefix(id, other) + 1)
        shortest[id] = id[:length]
    return shortest


def _common_prefix(a: str, b: str) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


def styled(value: str) -> Text:
    """A state or status coloured by what it means."""
    return Text(value, style=STATE_STYLES.get(value, ""))


NO_WRAP = {"ID", "NAME", "INVOCATION", "REDRIVEN AS"}
PIPE_WIDTH = 4096


def emit(renderable: RenderableType = "") -> None:
    """Print on stdout: fitted to a terminal, or as wide as it needs when piped."""
    if console.is_terminal:
        console.print(renderable)
        return
    options = console.options.update_width(PIPE_WIDTH)
    width = Measurement.get(console, options, renderable).maximum
    Console(file=console.file, width=max(width, console.width)).print(renderable, crop=False)


def table(columns: Sequence[str], rows: Iterable[Sequence[Any]], title: str | None = None) -> Table:
    """A plain table; cells may be text or Rich renderables, None prints as ``-``."""
    heads = [Column(name, no_wrap=name in NO_WRAP) for name in columns]
    out = Table(*heads, title=title, title_justify="left", header_style="bold")
    for row in rows:
        out.add_row(*(_cell(cell) for cell in row))
    return out


def _cell(value: Any) -> RenderableType:
    """Stored text is shown as it is, never read as Rich markup."""
    if value is None:
        return "-"
    return Text(str(value)) if isinstance(value, str | int | float) else value


def details(pairs: Iterable[tuple[str, Any]]) -> Table:
    """A two-column ``key  value`` grid for one record; None values are left out."""
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column(overflow="fold")
    for key, value in pairs:
        if value is not None:
            grid.add_row(key, _cell(value))
    return grid


def duration(ms: float) -> str:
    return f"{ms:.0f}ms" if ms < 1000 else f"{ms / 1000:.2f}s"


def attempts_view(rows: Sequence[AttemptRow]) -> RenderableType:
    """Every attempt in a table, then the stack trace of each attempt that has one."""
    if not rows:
        return Text("no attempts yet", style="dim")
    parts: list[RenderableType] = [
        table(
            ["#", "STARTED", "DURATION", "STATUS", "ERROR"],
            (
                [
                    str(a.number),
                    when(a.started_at),
                    duration(a.duration_ms),
                    styled(a.status),
                    error_text(a.error_type, a.error_message),
                ]
                for a in rows
            ),
            title="attempts",
        )
    ]
    for a in rows:
        if a.error_trace:
            trace = "".join(line if line.endswith("\n") else line + "\n" for line in a.error_trace)
            parts.append(Text(f"attempt {a.number} trace:", style="bold"))
            parts.append(Text(trace.rstrip("\n"), style="dim"))
    for a in rows:
        if a.log_excerpt:
            parts.append(Text(f"attempt {a.number} log:", style="bold"))
            parts.append(Text(a.log_excerpt))
    return Group(*parts)


def error_text(error_type: str | None, message: str | None) -> str | None:
    """``Type: message`` for an error, None when there is none."""
    if error_type is None and message is None:
        return None
    return ": ".join(part for part in (error_type, message) if part)
