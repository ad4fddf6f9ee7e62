"""The process invoker: a pool of worker processes speaking the Lambda Runtime API.

Per function, ``warm`` processes are started with the service and kept
(provisioned concurrency); more start on demand up to ``concurrency``, each
serving one invocation at a time, and one idle for longer than
``idle_timeout`` beyond the warm ones is stopped. A process is started with
``command`` (by default ``python -m invokers.bootstrap``, the packaged Python
runtime) and Lambda's environment: ``AWS_LAMBDA_RUNTIME_API``, ``_HANDLER``,
``AWS_LAMBDA_FUNCTION_NAME``, ``AWS_LAMBDA_FUNCTION_MEMORY_SIZE``,
``AWS_LAMBDA_FUNCTION_TIMEOUT``, ``LAMBDA_TASK_ROOT`` (the service's working
directory, also the process's), a few variables of the service's own
(``PATH``, ``HOME``, ``LANG`` …) and the function's ``environment``.

Limits that hold:

* timeout: at the invocation's deadline the process's whole process group is
  killed and the invocation is a ``Task.TimedOut`` error;
* memory: the process's data segment is limited to ``memory``; a process that
  runs out fails with ``Runtime.OutOfMemory``;
* a process that exits while it holds an invocation makes it a
  ``Runtime.ExitError`` (retried by the policy) and is replaced;
* a response larger than ``limits.response`` (6 MB) is refused:
  ``Function.ResponseSizeTooLarge``.

An invocation that waits for a free process gets its whole timeout once it
has one, as far as the dispatcher's patience allows (5 s past its deadline);
one that finds no process free by its deadline is the system error
``Runtime.Unavailable``, retried without using up an attempt.

A runtime that cannot start (its handler does not import …) is reported once
per function with the runtime's own message; the invocation that was waiting
for it fails with that error.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import secrets
import sys
import time
from collections import deque
from collections.abc import Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import invokers
from broker.functions.invoker import INVOKER_GRACE_S, InvokeRequest, InvokerInitError
from broker.functions.invoker_settings import process_concurrency
from broker.models import FunctionError, Outcome, SystemFault
from broker.observability.pools import PoolObserver, PoolStats
from broker.observability.tracing import xray_header
from invokers.context import new_log_stream_name, seconds_until
from invokers.runtime_api import RuntimeApiServer, Work
from invokers.worker import Assignment, Launch, Worker, WorkerState

if TYPE_CHECKING:
    from broker.config.models import FunctionConfig

log = logging.getLogger("eventwire.functions")

INIT_TIMEOUT_S: Final = 10.0
"""How long ``start`` waits for the warm processes to ask for work (Lambda's init limit)."""

RESPONSE_LIMIT_BYTES: Final = 64 * 1024 * 1024
"""What the Runtime API reads of a response at most (the limit users set is checked by
the dispatcher: ``limits.response``, 6 MB by default)."""

QUEUE_GRACE_S: Final = INVOKER_GRACE_S - 0.5
"""How far past its deadline an invocation that waited for a free process may run."""

INHERITED: Final = (
    "PATH",
    "HOME",
    "LANG",
    "LC_ALL",
    "LC_CTYPE",
    "TZ",
    "TMPDIR",
    "PYENV_ROOT",
    "PYENV_VERSION",
    "VIRTUAL_ENV",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
)
"""The service's own variables a worker sees (besides Lambda's and the function's)."""

_CLOSED: Final = SystemFault("Invoker.Closed", "the process invoker has been closed")


def launch_for(name: str, config: FunctionConfig, task_root: str | None = None) -> Launch:
    """The command, environment and limits of ``name``'s worker processes."""
    root = task_root or os.getcwd()
    package_root = str(Path(invokers.__file__).resolve().parents[1])
    argv = list(config.command or [sys.executable, "-m", "invokers.bootstrap"])
    paths = [root, package_root, *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    env = {key: os.environ[key] for key in INHERITED if key in os.environ}
    env.update(
        {
            "PYTHONPATH": os.pathsep.join(dict.fromkeys(paths)),
            "LAMBDA_TASK_ROOT": root,
            "_HANDLER": config.handler or "",
            "AWS_LAMBDA_FUNCTION_NAME": name,
            "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(config.memory_mb),
            "AWS_LAMBDA_FUNCTION_TIMEOUT": f"{config.timeout_s:g}",
            "AWS_LAMBDA_LOG_GROUP_NAME": f"/aws/lambda/{name}",
            "AWS_LAMBDA_LOG_STREAM_NAME": new_log_stream_name(),
        }
    )
    env.update(config.environment)
    return Launch(argv, env, root, config.memory_mb * 1024 * 1024)


class ProcessInvoker:
    """A pool of Runtime API processes for one function; see the module docstring."""

    def __init__(
        self, name: str, config: FunctionConfig, *, response_limit: int = RESPONSE_LIMIT_BYTES
    ) -> None:
        self.name = name
        self.concurrency = process_concurrency(config)
        self.warm = config.warm
        self.idle_timeout_s = config.idle_timeout_s
        self.launch = launch_for(name, config)
        self._timeout_s = config.timeout_s
        self._server = RuntimeApiServer(max_response_bytes=response_limit)
        self._workers: set[Worker] = set()
        self._idle: deque[Worker] = deque()
        self._waiters: deque[asyncio.Future[Worker | Outcome]] = deque()
        self._numbers = itertools.count(1)
        self._tasks: set[asyncio.Task[None]] = set()
        self._start_failures = 0
        self._init_reported = False
        self._closed = False
        self._reaper: asyncio.Task[None] | None = None
        self.cold_starts = 0
        self.cold_start_ms: deque[float] = deque(maxlen=200)
        self._observer: PoolObserver | None = None

    # ------------------------------------------------------------ Invoker

    async def start(self) -> None:
        """Start the warm processes and wait until they ask for work (or fail to start)."""
        await self._server.start()
        self._reaper = asyncio.create_task(self._reap(), name=f"eventwire-reaper-{self.name}")
        starting = [self._spawn() for _ in range(self.warm)]
        if not starting:
            return
        await asyncio.wait(
            [asyncio.ensure_future(w.settled.wait()) for w in starting], timeout=INIT_TIMEOUT_S
        )
        failed = next((w.init_error for w in starting if w.init_error is not None), None)
        if failed is not None:
            raise InvokerInitError(f"{failed.error_type}: {failed.message}")
        if any(w.state is WorkerState.STARTING for w in starting):
            log.warning(
                "function %s: warm processes still starting after %.0fs", self.name, INIT_TIMEOUT_S
            )

    async def invoke(self, request: InvokeRequest) -> Outcome:
        if self._closed:
            return _CLOSED
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds_until(request.deadline)
        while True:
            got = await self._acquire(deadline)
            if not isinstance(got, Worker):
                return got
            # Waiting for a free process does not eat into the function's timeout, as far as
            # the dispatcher's patience allows.
            run_s = min(self._timeout_s, deadline + QUEUE_GRACE_S - loop.time())
            work = Work(
                request_id=request.request_id,
                payload=request.payload,
                deadline_ms=int((time.time() + run_s) * 1000),
                function_arn=request.function_arn,
                trace_id=xray_header(request.traceparent) or _untraced(),
            )
            assignment = Assignment(work, loop.create_future())
            if got.assign(assignment):
                break
        return await self._await(got, assignment, loop.time() + run_s)

    async def close(self) -> None:
        """Stop every process (SIGTERM, then SIGKILL after a second) and the Runtime API."""
        self._closed = True
        if self._reaper is not None:
            self._reaper.cancel()
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(_CLOSED)
        workers = list(self._workers)
        for worker in workers:
            worker.terminate()
        if workers:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(1.0):
                    await asyncio.gather(*(w.exited.wait() for w in workers if w.process))
        for worker in workers:
            worker.kill("stopped")
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.close()

    def observe(self, observer: PoolObserver) -> None:
        self._observer = observer

    def pool_stats(self) -> PoolStats:
        states = [w.state for w in self._workers]
        ordered = sorted(self.cold_start_ms)
        return PoolStats(
            idle=states.count(WorkerState.IDLE),
            busy=states.count(WorkerState.BUSY),
            starting=states.count(WorkerState.STARTING),
            cold_starts=self.cold_starts,
            cold_start_p50_ms=ordered[len(ordered) // 2] if ordered else None,
        )

    # ------------------------------------------------------------ one invocation

    async def _await(self, worker: Worker, assignment: Assignment, deadline: float) -> Outcome:
        try:
            async with asyncio.timeout_at(deadline):
                return await asyncio.shield(assignment.result)
        except TimeoutError:
            if assignment.result.done():  # answered just as the deadline passed
                return assignment.result.result()
            worker.kill("timeout")
            worker._drain()
            assignment.finish(
                FunctionError(
                    "Task.TimedOut",
                    f"Task timed out after {self._timeout_s:.2f} seconds",
                    log=assignment.log.text(),
                )
            )
            return assignment.result.result()
        except asyncio.CancelledError:
            worker.kill("cancelled")  # the service is stopping: the lease goes back
            raise

    async def _acquire(self, deadline: float) -> Worker | Outcome:
        """An idle worker, starting one if the pool may grow; an outcome if none comes."""
        while self._idle:
            worker = self._idle.pop()  # the most recently idle: the others can age out
            if worker.state is WorkerState.IDLE:
                return worker
        waiter: asyncio.Future[Worker | Outcome] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        self._scale()
        try:
            async with asyncio.timeout_at(deadline):
                return await waiter
        except TimeoutError:
            return SystemFault(
                "Runtime.Unavailable",
                f"no process of {self.name} became free before the invocation's deadline "
                f"({len(self._workers)} of {self.concurrency} running)",
            )
        finally:
            handed = waiter.result() if waiter.done() and not waiter.cancelled() else None
            if isinstance(handed, Worker):
                if not _taken(handed):
                    self._give(handed)  # handed over just as this caller gave up
            else:
                with contextlib.suppress(ValueError):
                    self._waiters.remove(waiter)

    # ------------------------------------------------------------ pool

    def _spawn(self) -> Worker:
        worker = Worker(next(self._numbers), self.name, self)
        self._workers.add(worker)
        self._track(self._start_worker(worker))
        return worker

    async def _start_worker(self, worker: Worker) -> None:
        try:
            listener = await self._server.listen(worker)
        except Exception as exc:
            self._not_started(worker, f"cannot serve the Runtime API: {exc}")
            return
        try:
            await worker.spawn(self.launch, listener)
        except Exception as exc:
            await self._server.unlisten(listener)
            self._not_started(worker, f"cannot run {self.launch.argv[0]!r}: {exc}")

    def _not_started(self, worker: Worker, message: str) -> None:
        worker.listener = None
        worker.state = WorkerState.STOPPED
        worker.init_error = FunctionError("Runtime.InvalidEntrypoint", message)
        worker.exited.set()
        worker.settled.set()
        self.on_exit(worker)

    def _scale(self) -> None:
        """Start as many processes as there are callers waiting, within ``concurrency``."""
        if self._closed:
            return
        starting = sum(1 for w in self._workers if w.state is WorkerState.STARTING)
        wanted = sum(1 for w in self._waiters if not w.done()) - starting
        while wanted > 0 and len(self._workers) < self.concurrency:
            self._spawn()
            wanted -= 1

    def _keep_warm(self) -> None:
        if self._closed:
            return
        missing = self.warm - len(self._workers)
        if missing <= 0:
            return
        if self._start_failures:
            delay = min(60.0, 0.5 * 2 ** (self._start_failures - 1))
            asyncio.get_running_loop().call_later(delay, self._refill)
            return
        for _ in range(missing):
            self._spawn()

    def _refill(self) -> None:
        if not self._closed:
            for _ in range(self.warm - len(self._workers)):
                self._spawn()

    def _give(self, worker: Worker) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(worker)
                return
        self._idle.append(worker)

    def _track(self, coroutine: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _reap(self) -> None:
        """Stop processes idle for longer than ``idle_timeout`` beyond the warm ones."""
        interval = max(0.05, min(self.idle_timeout_s / 4, 5.0))
        while True:
            await asyncio.sleep(interval)
            now = time.monotonic()
            while (
                self._idle
                and len(self._workers) > self.warm
                and now - self._idle[0].idle_since > self.idle_timeout_s
            ):
                worker = self._idle.popleft()
                log.debug("function %s: stopping idle process %s", self.name, worker.pid)
                self._workers.discard(worker)
                worker.terminate()

    # ------------------------------------------------------------ PoolHooks

    def on_idle(self, worker: Worker) -> None:
        if self._closed or worker not in self._workers:
            worker.terminate()
            return
        self._give(worker)

    def on_started(self, worker: Worker) -> None:
        """The worker asked for work for the first time: its cold start is over."""
        self.cold_starts += 1
        if worker.cold_start_ms is not None:
            self.cold_start_ms.append(worker.cold_start_ms)
            if self._observer is not None:
                self._observer.cold_start(self.name, worker.cold_start_ms / 1000)
        self._start_failures = 0
        self._init_reported = False

    def on_init_error(self, worker: Worker, error: FunctionError) -> None:
        self._report_init_error(error)

    def on_exit(self, worker: Worker) -> None:
        reason = _killed_for(worker)
        if reason is not None and self._observer is not None:
            self._observer.worker_killed(self.name, reason)
        self._workers.discard(worker)
        with contextlib.suppress(ValueError):
            self._idle.remove(worker)
        if worker.listener is not None:
            self._track(self._server.unlisten(worker.listener))
        if worker.init_error is not None:
            self._start_failures += 1
            self._report_init_error(worker.init_error)
            self._fail_one_waiter(worker.init_error)
        elif worker.killed_for is None:
            code = worker.process.returncode if worker.process else None
            log.warning(
                "function %s: process %s exited (%s); replacing it", self.name, worker.pid, code
            )
        if not self._closed:
            self._scale()
            self._keep_warm()

    def _fail_one_waiter(self, error: FunctionError) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(error)
                return

    def _report_init_error(self, error: FunctionError) -> None:
        if not self._init_reported:
            self._init_reported = True
            log.error(
                "function %s: runtime failed to start: %s: %s",
                self.name,
                error.error_type,
                error.message,
            )


def _killed_for(worker: Worker) -> str | None:
    """Why ``worker`` ended, as the metrics count it: ``timeout``, ``memory``, ``exit`` (it
    exited by itself, running or idle); None when it was stopped or never started."""
    if worker.killed_for == "timeout":
        return "timeout"
    if worker.killed_for is not None or worker.init_error is not None:
        return None
    current = worker.current
    if current is not None and current.result.done():
        outcome = current.result.result()
        if isinstance(outcome, FunctionError) and outcome.error_type == "Runtime.OutOfMemory":
            return "memory"
    return "exit"


def _taken(worker: Worker) -> bool:
    return worker.state is not WorkerState.IDLE or worker.current is not None


def _untraced() -> str:
    """Lambda's trace header for an attempt not traced: a fresh root, not sampled."""
    return f"Root=1-{int(time.time()):08x}-{secrets.token_hex(12)};Sampled=0"
