"""Structured log lines: short, greppable text, or one JSON object per line.

What a line is about — the function, request id, attempt, mapping, partition — is
set once where that work starts (:func:`log_fields`, in the task that does it)
and every line logged under it carries those as JSON fields, not only inside
its message.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime

FIELDS: ContextVar[dict[str, object]] = ContextVar("eventwire_log_fields", default={})  # noqa: B039
"""The fields of the work under way in this task (never mutated: replaced)."""


@contextmanager
def log_fields(**fields: object) -> Iterator[None]:
    """Lines logged within carry ``fields`` (those that are None are left out)."""
    given = {key: value for key, value in fields.items() if value is not None}
    token = FIELDS.set({**FIELDS.get(), **given})
    try:
        yield
    finally:
        FIELDS.reset(token)


class _TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        stamp = datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds")
        stamp = stamp.replace("+00:00", "Z")
        line = f"{stamp} {record.levelname:<7} {record.name} {record.getMessage()}"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
            **FIELDS.get(),
        }
        if record.exc_info:
            data["exception"] = self.formatException(record.exc_info)
        return json.dumps(data, ensure_ascii=False)


def configure(level: str = "INFO", fmt: str = "text") -> None:
    """Send Eventwire's logs to stderr in ``fmt`` (``text`` or ``json``)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_JsonFormatter() if fmt == "json" else _TextFormatter())
    root = logging.getLogger("eventwire")
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    root.propagate = False
