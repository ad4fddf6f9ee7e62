"""Per-invocation capture of what a function writes: its stdout/stderr lines, capped.

Worker processes' output arrives on a pipe (:mod:`invokers.worker`); an
in-process python handler's ``print`` and ``logging`` are caught here: while an
invocation runs, :func:`start` points a context variable at its
:class:`LogBuffer`, and ``sys.stdout``/``sys.stderr`` (wrapped once) and a
root logging handler write there instead of to the service's own output.
Threads running sync handlers get the variable through the copied context.
"""

from __future__ import annotations

import contextvars
import io
import logging
import sys
from typing import Final, TextIO

LOG_LIMIT_BYTES: Final = 64 * 1024
"""What is kept of one invocation's output; the rest is counted, not stored."""


class LogBuffer:
    """One invocation's output, kept up to ``limit`` bytes."""

    def __init__(self, limit: int = LOG_LIMIT_BYTES) -> None:
        self.limit = limit
        self._lines: list[str] = []
        self._size = 0
        self._dropped = 0
        self._partial = ""

    def add(self, line: str) -> None:
        """One whole line (without its newline)."""
        size = len(line.encode(errors="replace")) + 1
        if self._size + size > self.limit:
            self._dropped += size
            return
        self._lines.append(line)
        self._size += size

    def write(self, text: str) -> None:
        """Text as a stream receives it: lines are cut at newlines."""
        *lines, self._partial = (self._partial + text).split("\n")
        for line in lines:
            self.add(line)

    def text(self) -> str:
        if self._partial:
            self.add(self._partial)
            self._partial = ""
        text = "\n".join(self._lines)
        if self._dropped:
            text += f"\n[log truncated: {self._dropped} more bytes]"
        return text


_current: contextvars.ContextVar[LogBuffer | None] = contextvars.ContextVar(
    "eventwire_log_buffer", default=None
)


class _Redirect(io.TextIOBase):
    """A stand-in for ``sys.stdout``/``sys.stderr`` that writes to the invocation's buffer."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream

    def write(self, text: str) -> int:
        buffer = _current.get()
        if buffer is None:
            return self.stream.write(text)
        buffer.write(text)
        return len(text)

    def flush(self) -> None:
        self.stream.flush()

    def isatty(self) -> bool:
        return self.stream.isatty()

    def fileno(self) -> int:
        return self.stream.fileno()

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return self.stream.encoding


class _CaptureHandler(logging.Handler):
    """Log records emitted during an invocation go to its buffer too."""

    def emit(self, record: logging.LogRecord) -> None:
        buffer = _current.get()
        if buffer is not None:
            buffer.write(self.format(record) + "\n")


def install() -> None:
    """Wrap ``sys.stdout``/``sys.stderr`` and add the logging handler (each at most once)."""
    if not isinstance(sys.stdout, _Redirect):
        sys.stdout = _Redirect(sys.stdout)
    if not isinstance(sys.stderr, _Redirect):
        sys.stderr = _Redirect(sys.stderr)
    root = logging.getLogger()
    if not any(isinstance(h, _CaptureHandler) for h in root.handlers):
        handler = _CaptureHandler()
        handler.setFormatter(logging.Formatter("[%(levelname)s] %(name)s: %(message)s"))
        root.addHandler(handler)


def start(buffer: LogBuffer) -> contextvars.Token[LogBuffer | None]:
    """From now on (in this context and those copied from it), output goes to ``buffer``.

    A pair of calls rather than a context manager: this runs once per invocation.
    """
    return _current.set(buffer)


def stop(token: contextvars.Token[LogBuffer | None]) -> None:
    """Output goes where it went before the matching :func:`start`."""
    _current.reset(token)
