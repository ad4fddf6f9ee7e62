"""Reading what ``tests.mapping_handlers:sink`` appended while its process may still be
writing, or was killed writing: one JSON line per invocation."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def sink_entries(path: Path) -> Iterator[dict[str, Any]]:
    """The complete lines of ``path``.

    A line still being appended (no newline yet: a read can catch a write halfway) is
    left for the next look. A line torn by a SIGKILL in the middle of its write (the
    kernel stops a write to a file at a page boundary for a fatal signal) has the next
    line appended to it: that next line is read, the torn start dropped — its invocation
    never settled, so it runs again and writes its line anew.
    """
    if not path.exists():
        return
    text = path.read_text()
    for line in text[: text.rfind("\n") + 1].splitlines():
        if not line.strip():
            continue
        try:
            yield json.loads(line)
        except json.JSONDecodeError:
            yield json.loads(line[line.rindex('{"request"') :])
