"""One worker process of a pool: started, fed invocations through the Runtime API, watched.

A worker runs in its own session (so its whole process group can be
killed), with a data-segment limit of the function's memory, and its stdout
and stderr on one pipe that Eventwire reads: what it writes while it holds an
invocation is that invocation's log, what it writes otherwise (its init) goes
to Eventwire's own log.

States: ``starting`` (spawned, not yet asking for work), ``idle`` (blocked in
``/invocation/next``), ``busy`` (holding an invocation), ``stopped``.
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import enum
import json
import logging
import os
import resource
import signal
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final, Protocol

from broker.models import FunctionError, Outcome, Success
from invokers.capture import LogBuffer
from invokers.runtime_api import Listener, RuntimeGone, Work

log = logging.getLogger("eventwire.functions")

_TAIL_LINES: Final = 20
_OOM_MARKERS: Final = (
    "memoryerror",
    "out of memory",
    "cannot allocate memory",
    "allocation failed",
    "bad_alloc",
    "enomem",
)


class WorkerState(enum.StrEnum):
    STARTING = "starting"
    IDLE = "idle"
    BUSY = "busy"
    STOPPED = "stopped"


@dataclass(slots=True)
class Assignment:
    """An invocation handed to a worker, and where its outcome goes."""

    work: Work
    result: asyncio.Future[Outcome]
    log: LogBuffer = field(default_factory=LogBuffer)

    def finish(self, outcome: Outcome) -> None:
        if not self.result.done():
            self.result.set_result(outcome)


class PoolHooks(Protocol):
    """What a worker tells its pool."""

    def on_started(self, worker: Worker) -> None: ...

    def on_idle(self, worker: Worker) -> None: ...

    def on_init_error(self, worker: Worker, error: FunctionError) -> None: ...

    def on_exit(self, worker: Worker) -> None: ...


@dataclass(frozen=True, slots=True)
class Launch:
    """How to start a worker: command, environment, working directory, memory limit."""

    argv: Sequence[str]
    env: Mapping[str, str]
    cwd: str
    memory_bytes: int | None


class Worker:
    """One process speaking the Runtime API on its own listener."""

    def __init__(self, number: int, function: str, hooks: PoolHooks) -> None:
        self.number = number
        self.function = function
        self.state = WorkerState.STARTING
        self.current: Assignment | None = None
        self.spawned_at = time.monotonic()
        self.idle_since = self.spawned_at
        self.cold_start_ms: float | None = None
        self.killed_for: str | None = None
        self.init_error: FunctionError | None = None
        self.listener: Listener | None = None
        self.process: asyncio.subprocess.Process | None = None
        self.exited = asyncio.Event()
        self.settled = asyncio.Event()
        """Set once the worker first asks for work, or exits: its start is over either way."""
        self._watcher: asyncio.Task[None] | None = None
        self._hooks = hooks
        self._next: asyncio.Future[Assignment] | None = None
        self._fd: int | None = None
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._partial = ""
        self._tail: deque[str] = deque(maxlen=_TAIL_LINES)

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    # ------------------------------------------------------------ life

    async def spawn(self, launch: Launch, listener: Listener) -> None:
        """Start the process; raises ``OSError`` when the command cannot be run."""
        self.listener = listener
        env = dict(launch.env, AWS_LAMBDA_RUNTIME_API=listener.address)
        read_fd, write_fd = os.pipe()
        try:
            self.process = await asyncio.create_subprocess_exec(
                *launch.argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=write_fd,
                stderr=write_fd,
                env=env,
                cwd=launch.cwd,
                start_new_session=True,
                preexec_fn=_memory_limit(launch.memory_bytes),
            )
        except BaseException:
            os.close(read_fd)
            raise
        finally:
            os.close(write_fd)
        self.spawned_at = time.monotonic()
        self._fd = read_fd
        os.set_blocking(read_fd, False)
        asyncio.get_running_loop().add_reader(read_fd, self._read)
        self._watcher = asyncio.create_task(
            self._watch(), name=f"eventwire-worker-{self.function}-{self.number}"
        )

    def kill(self, reason: str) -> None:
        """SIGKILL the worker's whole process group (its children too)."""
        if self.killed_for is None:
            self.killed_for = reason
        if self.process is not None and self.process.returncode is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.process.pid, signal.SIGKILL)

    def terminate(self) -> None:
        """Ask the worker to stop (SIGTERM to its group)."""
        if self.killed_for is None:
            self.killed_for = "stopped"
        if self.process is not None and self.process.returncode is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.process.pid, signal.SIGTERM)

    async def _watch(self) -> None:
        assert self.process is not None
        code = await self.process.wait()
        # Children left in the group (a shell runtime's curl, a handler's subprocess) go too.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self._drain(final=True)
        previous = self.state
        self.state = WorkerState.STOPPED
        if self._next is not None and not self._next.done():
            self._next.set_exception(RuntimeGone())
            self._next.exception()  # retrieved: nobody may be waiting any more
        if self.current is not None and not self.current.result.done():
            self.current.finish(self._exit_error(code))
        elif previous is WorkerState.STARTING and self.init_error is None:
            self.init_error = self._exit_error(code, starting=True)
        self.exited.set()
        self.settled.set()
        self._hooks.on_exit(self)

    def _exit_error(self, code: int, *, starting: bool = False) -> FunctionError:
        tail = "\n".join(self._tail)
        status = f"signal {signal.Signals(-code).name}" if code < 0 else f"exit status {code}"
        if any(marker in tail.lower() for marker in _OOM_MARKERS):
            return FunctionError(
                "Runtime.OutOfMemory",
                f"Runtime exited with error: {status}: out of memory",
                log=self._log_text(),
            )
        when = "during init" if starting else "while running the invocation"
        message = f"Runtime exited with error: {status} ({when})"
        trace = tuple(self._tail) if starting else ()  # a running invocation's output is its log
        return FunctionError("Runtime.ExitError", message, trace, log=self._log_text())

    def _log_text(self) -> str:
        return self.current.log.text() if self.current is not None else ""

    # ------------------------------------------------------------ Runtime API

    async def next(self) -> Work:
        if self.state is WorkerState.STOPPED or self.killed_for is not None:
            raise RuntimeGone()
        if self.current is not None and not self.current.result.done():
            self.current.finish(
                FunctionError(
                    "Runtime.InvalidResponse", "the runtime asked for more work without answering"
                )
            )
        self.current = None
        self._next = asyncio.get_running_loop().create_future()
        self.state = WorkerState.IDLE
        self.idle_since = time.monotonic()
        if self.cold_start_ms is None:
            self.cold_start_ms = (self.idle_since - self.spawned_at) * 1000
            self.settled.set()
            self._hooks.on_started(self)
        self._hooks.on_idle(self)
        assignment = await self._next
        return assignment.work

    def assign(self, assignment: Assignment) -> bool:
        """Hand ``assignment`` to the runtime blocked in ``next``; False if it cannot take it."""
        if self._next is None or self._next.done() or self.state is not WorkerState.IDLE:
            return False
        self.current = assignment
        self.state = WorkerState.BUSY
        self._next.set_result(assignment)
        return True

    def respond(self, request_id: str, body: bytes) -> bool:
        current = self._holding(request_id)
        if current is None:
            return False
        self._drain()
        current.finish(Success(body, log=current.log.text()))
        return True

    def fail(self, request_id: str, error_type: str | None, body: bytes) -> bool:
        current = self._holding(request_id)
        if current is None:
            return False
        self._drain()
        error = _error_from(error_type, body, "Unhandled")
        current.finish(
            FunctionError(error.error_type, error.message, error.trace, log=current.log.text())
        )
        return True

    def init_failed(self, error_type: str | None, body: bytes) -> None:
        self._drain()
        self.init_error = _error_from(error_type, body, "Runtime.Unknown")
        self._hooks.on_init_error(self, self.init_error)

    def _holding(self, request_id: str) -> Assignment | None:
        current = self.current
        if current is None or current.work.request_id != request_id or current.result.done():
            return None
        return current

    # ------------------------------------------------------------ output

    def _read(self) -> None:
        self._drain(flush=False)

    def _drain(self, *, final: bool = False, flush: bool = True) -> None:
        """Read whatever the process has written so far (without blocking)."""
        fd = self._fd
        if fd is None:
            return
        while True:
            try:
                chunk = os.read(fd, 65536)
            except BlockingIOError:
                chunk = None
            except OSError:
                chunk = b""
            if chunk:
                self._take(self._decoder.decode(chunk))
                continue
            if chunk == b"" or final:
                self._close_pipe(eof=chunk == b"")
            break
        if self._partial and flush:
            # A response ends the invocation's output even without a final newline.
            self._line(self._partial)
            self._partial = ""

    def _close_pipe(self, *, eof: bool) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            asyncio.get_running_loop().remove_reader(fd)
            os.close(fd)

    def _take(self, text: str) -> None:
        text = self._partial + text
        *lines, self._partial = text.split("\n")
        for line in lines:
            self._line(line)

    def _line(self, line: str) -> None:
        line = line.rstrip("\r")
        self._tail.append(line)
        current = self.current
        if current is not None and not current.result.done():
            current.log.add(line)
        else:
            log.info("%s[%s] %s", self.function, self.pid, line)


def _error_from(error_type: str | None, body: bytes, default: str) -> FunctionError:
    """Lambda's error document (``errorType``, ``errorMessage``, ``stackTrace``) as an error."""
    try:
        document = json.loads(body) if body else {}
    except ValueError:
        document = None
    if not isinstance(document, dict):
        return FunctionError(error_type or default, body.decode(errors="replace")[:4096])
    trace = document.get("stackTrace") or ()
    if isinstance(trace, str):
        trace = (trace,)
    return FunctionError(
        str(document.get("errorType") or error_type or default),
        str(document.get("errorMessage") or ""),
        tuple(str(frame) for frame in trace) if isinstance(trace, list | tuple) else (),
    )


def _memory_limit(limit_bytes: int | None) -> Callable[[], None] | None:
    """A ``preexec_fn`` limiting the worker's data segment (heap and private memory).

    ``RLIMIT_DATA`` rather than ``RLIMIT_AS``: runtimes such as Node.js reserve
    gigabytes of address space they never use and do not start under an
    address-space limit of a few hundred MB.
    """
    if limit_bytes is None:
        return None

    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_DATA, (limit_bytes, limit_bytes))

    return apply
