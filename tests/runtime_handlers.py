"""Handlers run by the packaged Python bootstrap in worker processes (the process invoker)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any


def echo(event: Any, context: Any) -> dict[str, Any]:
    """Prints a line, answers with the event and what the process knows of itself."""
    print(f"echoing {event!r}")
    return {
        "event": event,
        "request_id": context.aws_request_id,
        "function_name": context.function_name,
        "memory": context.memory_limit_in_mb,
        "remaining_ms": context.get_remaining_time_in_millis(),
        "pid": os.getpid(),
        "env": {k: os.environ.get(k) for k in ("GREETING", "_HANDLER", "LAMBDA_TASK_ROOT")},
    }


def noop(event: Any, context: Any) -> None:
    return None


def fail(event: Any, context: Any) -> None:
    print("about to fail", file=sys.stderr)
    raise ValueError(f"bad event {event!r}")


def hang(event: Any, context: Any) -> None:
    """Starts a child that would outlive it, records both pids, and never returns."""
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    Path(event["pids"]).write_text(f"{os.getpid()} {child.pid}")
    print("hanging", flush=True)
    time.sleep(600)


def allocate(event: Any, context: Any) -> int:
    """Allocates ``event["mb"]`` megabytes."""
    block = bytearray(event["mb"] * 1024 * 1024)
    return len(block)


def crash_once(event: Any, context: Any) -> str:
    """The first run dies mid-invocation (as a segfault would); later runs succeed."""
    marker = Path(event["marker"])
    if not marker.exists():
        marker.write_text(str(os.getpid()))
        print("crashing", flush=True)
        os._exit(3)
    return f"survived in {os.getpid()}"


def chatty(event: Any, context: Any) -> str:
    for n in range(event["lines"]):
        print(f"line {n} " + "x" * 100)
    return "ok"


def nap(event: Any, context: Any) -> int:
    """Sleeps ``event["s"]`` seconds; answers the milliseconds it had left when it began."""
    remaining = int(context.get_remaining_time_in_millis())
    time.sleep(event["s"])
    return remaining


def trace_header(event: Any, context: Any) -> str:
    """Lambda's trace header of this invocation, as the runtime sets it."""
    return os.environ.get("_X_AMZN_TRACE_ID", "")
