"""The dispatcher: lease invocations, run them through their invoker, settle the outcome.

One loop per process leases as many invocations as it has free slots (the
global ``concurrency``; reserved concurrency per function is enforced by the
queue, across processes), runs each in its own task, and hands the outcome to
the :class:`~broker.dispatch.settlement_writer.Settler`; a run's slot is free as soon as its
outcome is handed over (up to ``concurrency`` outcomes may wait to be written).
A run in a lane keeps its slot instead and asks for the lane's next invocation
with its settlement: the next batch of a Kafka partition starts as its
predecessor's settlement is written, without a lease of its own.
Each attempt runs within its spans (:mod:`broker.observability.tracing`: no-ops
unless tracing is configured) and its log fields.
A heartbeat extends the leases of long runs, and cancels a run whose invoker
hangs past its deadline. ``stop()`` only sets an event; ``run()`` then stops
leasing, lets running invocations finish for up to ``shutdown_grace_s``,
cancels the rest and gives their leases back to the queue.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import random
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from broker.destinations.external import DEAD_LETTER_OF, redacted
from broker.dispatch.mapping_batches import is_mapping_batch, not_to_run, settle_mapping_attempt
from broker.dispatch.retry import STORE_BACKOFF, RecordCounts, backoff_delay, is_expired
from broker.dispatch.settlement import settle_attempt
from broker.dispatch.settlement_writer import Settler
from broker.functions.catalog import Catalog, Deployed
from broker.functions.delivery import INVOKER as DELIVERY_INVOKER
from broker.functions.invoker import INVOKER_GRACE_S, InvokeRequest
from broker.functions.overrides import effective
from broker.models import (
    Condition,
    FunctionError,
    FunctionLimits,
    Invocation,
    Lease,
    Outcome,
    Success,
    SystemFault,
)
from broker.observability.logs import log_fields
from broker.observability.metrics import Metrics
from broker.observability.tracing import NO_TRACING, TRACEPARENT, AttemptTrace, Tracing, trace_id
from broker.queue.base import InvocationQueue

log = logging.getLogger("eventwire.dispatch")


@dataclass(slots=True)
class _Running:
    lease: Lease
    expires_at: datetime
    task: asyncio.Task[None] | None = None
    submitted: bool = False
    give_up_at: float = math.inf
    """Event-loop time past which the invoker is taken to hang (its deadline + grace)."""
    hung: bool = False


@dataclass
class DispatchStats:
    started: int = 0
    succeeded: int = 0
    failed: int = 0
    retried: int = 0
    leases_lost: int = 0


class Dispatcher:
    def __init__(
        self,
        queue: InvocationQueue,
        catalog: Catalog,
        *,
        owner: str,
        clock: Callable[[], datetime],
        concurrency: int = 64,
        shutdown_grace_s: float = 30.0,
        poll_interval_s: float = 1.0,
        settle_batch: int = 256,
        rng: random.Random | None = None,
        metrics: Metrics | None = None,
        tracing: Tracing = NO_TRACING,
    ) -> None:
        self.queue = queue
        self.metrics = metrics or Metrics()
        self.tracing = tracing
        self.catalog = catalog
        self.owner = owner
        self.clock = clock
        self.concurrency = concurrency
        self.shutdown_grace_s = shutdown_grace_s
        self.poll_interval_s = poll_interval_s
        self.rng = rng or random.Random()
        self.settler = Settler(queue, clock, max_batch=settle_batch)
        self.stats = DispatchStats()
        self._running: dict[str, _Running] = {}
        self._settling = 0
        """Of ``_running``, those whose outcome is known and waits to be written."""
        self._by_function: Counter[str] = Counter()
        self._bounded = {
            name: f.local_concurrency
            for name, f in catalog.items()
            if f.local_concurrency is not None
        }
        self._stopping = asyncio.Event()
        self._slot_free = asyncio.Event()
        self.ready = asyncio.Event()
        """Set once the loop is leasing (tests and the service wait on it)."""

    def stop(self) -> None:
        self._stopping.set()

    @property
    def running(self) -> int:
        return len(self._running) - self._settling

    def _free_slots(self) -> int:
        """Slots for new runs: an outcome being written frees its slot, up to a second
        ``concurrency`` of them, so a slow commit does not idle the functions."""
        return min(
            self.concurrency - self.running,
            2 * self.concurrency - len(self._running),
        )

    async def run(self) -> None:
        settler = self.settler.start()
        heartbeat = asyncio.create_task(self._heartbeat(), name="eventwire-heartbeat")
        try:
            await self._loop()
        finally:
            await self._drain()
            heartbeat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await heartbeat
            await self.settler.close()
            if settler.done() and settler.exception():
                raise settler.exception()  # type: ignore[misc]

    # ------------------------------------------------------------ leasing

    async def _loop(self) -> None:
        failures = 0
        self.ready.set()
        while not self._stopping.is_set():
            free = self._free_slots()
            if free <= 0:
                self._slot_free.clear()
                await self._until(self._slot_free.wait())
                continue
            limits = self._lease_limits()
            if not limits:  # every function's pool in this process is busy
                self._slot_free.clear()
                await self._until(self._slot_free.wait())
                continue
            try:
                leases = await self.queue.lease(free, self.owner, limits, self.clock())
                failures = 0
            except Exception as exc:
                failures += 1
                delay = backoff_delay(failures, STORE_BACKOFF, self.rng)
                log.warning("lease: store unavailable (%s); retrying in %.1fs", exc, delay)
                await self._until(asyncio.sleep(delay))
                continue
            if not leases:
                await self._until(self._idle(limits))
                continue
            for lease in leases:
                self._by_function[lease.invocation.function] += 1
                self._start(lease)

    def _start(self, lease: Lease) -> None:
        """Run ``lease`` in its own task; its slot is already counted."""
        held = _Running(lease, lease.expires_at)
        self._running[lease.token] = held
        held.task = asyncio.create_task(self._run_one(held))

    async def _idle(self, limits: dict[str, FunctionLimits]) -> None:
        """Wait for work; also for a run to end when a busy pool held a function back."""
        if limits is self.catalog.limits:
            await self.queue.wait(limits, self.poll_interval_s)
            return
        self._slot_free.clear()
        waits = {
            asyncio.ensure_future(self.queue.wait(limits, self.poll_interval_s)),
            asyncio.ensure_future(self._slot_free.wait()),
        }
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in waits:
                task.cancel()
            await asyncio.gather(*waits, return_exceptions=True)

    def _lease_limits(self) -> dict[str, FunctionLimits]:
        """The functions to lease now: those with room in this process, capped at it."""
        if not self._bounded:
            return self.catalog.limits
        limits = dict(self.catalog.limits)
        for name, cap in self._bounded.items():
            room = cap - self._by_function[name]
            if room <= 0:
                del limits[name]
            else:
                limits[name] = replace(limits[name], at_most=room)
        return limits

    async def _until(self, awaitable: Awaitable[object]) -> None:
        """Wait for ``awaitable`` or for ``stop()``, whichever comes first."""
        work = asyncio.ensure_future(awaitable)
        stop = asyncio.ensure_future(self._stopping.wait())
        try:
            await asyncio.wait({work, stop}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (work, stop):
                if not task.done():
                    task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.gather(work, stop, return_exceptions=True)

    # ------------------------------------------------------------ running one

    async def _run_one(self, held: _Running) -> None:
        inv = held.lease.invocation
        batch = is_mapping_batch(inv)
        mapping = inv.source["mapping"] if batch else None
        position = inv.source.get("position", {}) if mapping is not None else {}
        with (
            log_fields(
                function=inv.function,
                request_id=inv.request_id,
                invocation_id=inv.id,
                attempt=inv.attempts,
                mapping=mapping.get("name") if mapping is not None else None,
                partition=position.get("partition"),
                trace_id=trace_id(inv.source.get(TRACEPARENT)),
            ),
            self.tracing.attempt(inv) as trace,
        ):
            await self._run_attempt(held, batch, trace)

    async def _run_attempt(self, held: _Running, mapping: bool, trace: AttemptTrace) -> None:
        lease = held.lease
        inv = lease.invocation
        function = effective(self.catalog[inv.function], inv.source)
        started_at = self.clock()
        self.stats.started += 1
        t0 = time.perf_counter()
        outcome = await self._attempt(held, function, started_at, mapping, trace)
        duration_ms = (time.perf_counter() - t0) * 1000
        # In a lane, the slot stays with the run until its settlement is written, and
        # passes to the lane's next invocation.
        chain_s = None
        if inv.lane is not None and not self._stopping.is_set():
            chain_s = self.catalog.limits[inv.function].lease_s
        chained: Lease | None = None
        try:
            settle = settle_mapping_attempt if mapping else settle_attempt
            settlement, decision = settle(
                lease, outcome, function, started_at, duration_ms, self.clock(), self.rng
            )
            settlement = trace.settled(settlement, outcome, decision.state.value)
            held.submitted = True
            if chain_s is None:
                self._settling += 1
                self._by_function[inv.function] -= 1
                self._slot_free.set()
            else:
                settlement = replace(settlement, chain_lease_s=chain_s)
            with trace.writing():
                ok, chained = await self.settler.submit(settlement)
            if not ok:
                self.stats.leases_lost += 1
            self._count(
                decision.state.value, inv.function, inv.id, outcome, decision.retry_at,
                settlement.error_type and f"{settlement.error_type}: {settlement.error_message}",
            )  # fmt: skip
            if ok and not inv.sync:
                self._measure_end(inv.function, decision.state.value, decision.condition,
                                  settlement.dead_letter is not None)  # fmt: skip
            if ok and decision.records is not None:
                self._measure_records(inv, decision.records)
        finally:
            self._running.pop(lease.token, None)
            if held.submitted and chain_s is None:
                self._settling -= 1
            elif chained is None:
                self._by_function[inv.function] -= 1
            self._slot_free.set()
        if chained is not None:
            if self._stopping.is_set():  # stopping meanwhile: not to be started now
                self._by_function[chained.invocation.function] -= 1
                try:
                    await self.queue.release([chained.token])
                except Exception as exc:
                    log.warning("stopping: could not release a lease (%s); it will expire", exc)
            else:
                self._start(chained)

    async def _attempt(
        self,
        held: _Running,
        function: Deployed,
        started_at: datetime,
        mapping: bool,
        trace: AttemptTrace,
    ) -> Outcome | None:
        """The attempt's outcome; None for an event too old to run (it is not invoked)."""
        inv = held.lease.invocation
        figures = self.metrics.function(inv.function)
        if mapping:
            expired = not_to_run(inv, started_at) is not None
        else:
            expired = is_expired(inv, function.config.retry, started_at)
            if not inv.sync:
                if inv.attempts <= 1:
                    self.metrics.received_from(inv.function, inv.origin.value).inc()
                age_s = (started_at - inv.first_enqueued_at).total_seconds()
                figures.event_age.observe(max(0.0, age_s))
        if expired:
            return None
        figures.concurrent.inc()
        t0 = time.perf_counter()
        try:
            with trace.invoking() as traceparent:
                outcome = await self._invoke(function, held, started_at, traceparent)
                trace.invoked(outcome)
        finally:
            figures.concurrent.dec()
        figures.invocations.inc()
        figures.duration.observe(time.perf_counter() - t0)
        if not isinstance(outcome, Success):
            figures.errors[_error_reason(outcome)].inc()
            if function.config.invoker == DELIVERY_INVOKER:
                self._count_delivery_failure(inv, function)
        return outcome

    def _count_delivery_failure(self, inv: Invocation, function: Deployed) -> None:
        """Lambda's DeadLetterErrors for a dead-letter delivery (by the function whose event
        it carries), else DestinationDeliveryFailures (by destination)."""
        dead_letter_of = inv.source.get(DEAD_LETTER_OF)
        if dead_letter_of:
            self.metrics.dead_letter_errors.labels(str(dead_letter_of)).inc()
        else:
            self.metrics.delivery_failures.labels(redacted(function.config.url or "")).inc()

    async def _invoke(
        self, function: Deployed, held: _Running, started_at: datetime, traceparent: str | None
    ) -> Outcome:
        inv = held.lease.invocation
        timeout_s = function.config.timeout_s
        request = InvokeRequest(
            request_id=inv.request_id,
            invocation_id=inv.id,
            function=inv.function,
            function_arn=function.arn,
            payload=inv.payload,
            deadline=started_at + timedelta(seconds=timeout_s),
            attempt=inv.attempts,
            traceparent=traceparent,
        )
        # The invoker owns the timeout; the heartbeat only cancels one that hangs past it.
        held.give_up_at = asyncio.get_running_loop().time() + timeout_s + INVOKER_GRACE_S
        try:
            outcome = await function.invoker.invoke(request)
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if held.hung and task is not None and task.uncancel() == 0:
                log.warning("invoke %s %s: invoker hung past its deadline", inv.function, inv.id)
                return FunctionError(
                    "Task.TimedOut", f"Task timed out after {timeout_s:.2f} seconds"
                )
            raise
        except Exception as exc:
            log.exception("invoke %s %s: invoker failed", inv.function, inv.id)
            return SystemFault(type(exc).__name__, str(exc) or type(exc).__name__)
        return response_limited(outcome, self.catalog.response_limit)

    def _count(
        self,
        state: str,
        function: str,
        invocation_id: str,
        outcome: Outcome | None,
        retry_at: datetime | None,
        settled_error: str | None = None,
    ) -> None:
        """``settled_error``: the settlement's error, for an outcome that is none (a batch's
        malformed partial response)."""
        if state == "succeeded":
            self.stats.succeeded += 1
            return
        error = outcome if isinstance(outcome, FunctionError | SystemFault) else None
        reason = f"{error.error_type}: {error.message}" if error else settled_error
        reason = reason or "event expired"
        if state == "pending":
            self.stats.retried += 1
            log.info(
                "↻ %s %s failed (%s); retry at %s",
                function,
                invocation_id,
                reason,
                retry_at.isoformat(timespec="seconds") if retry_at else "?",
            )
        elif state == "failed":
            self.stats.failed += 1
            log.warning("✗ %s %s failed for good (%s)", function, invocation_id, reason)
        elif not isinstance(outcome, Success):  # pragma: no cover - no other states
            log.error("unexpected state %s for %s", state, invocation_id)

    def _measure_end(
        self, function: str, state: str, condition: Condition | None, dead_lettered: bool
    ) -> None:
        figures = self.metrics.function(function)
        if state == "pending":
            figures.retries.inc()
        elif state == "failed":
            too_old = condition is Condition.EVENT_AGE_EXCEEDED
            figures.dropped["max_event_age" if too_old else "retries_exhausted"].inc()
            if dead_lettered:
                figures.dead_letters.inc()

    def _measure_records(self, inv: Invocation, counts: RecordCounts) -> None:
        figures = self.metrics.mapping(str(inv.source["mapping"].get("name", "")))
        for counter, records in (
            (figures.invoked, counts.invoked),
            (figures.failed, counts.failed),
            (figures.dropped, counts.dropped),
            (figures.on_failure, counts.on_failure),
        ):
            if records:
                counter.inc(records)

    # ------------------------------------------------------------ leases over time

    def _heartbeat_interval(self) -> float:
        shortest = min((lim.lease_s for lim in self.catalog.limits.values()), default=30.0)
        return max(0.5, min(shortest / 3, INVOKER_GRACE_S))

    async def _heartbeat(self) -> None:
        interval = self._heartbeat_interval()
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(interval)
            now = self.clock()
            due = {}
            for token, held in list(self._running.items()):
                if held.task is not None and not held.hung and loop.time() > held.give_up_at:
                    held.hung = True
                    held.task.cancel()
                lease_s = self.catalog.limits[held.lease.invocation.function].lease_s
                if (held.expires_at - now).total_seconds() < lease_s / 2:
                    due[token] = now + timedelta(seconds=lease_s)
            if not due:
                continue
            try:
                kept = await self.queue.extend(due)
            except Exception as exc:
                log.warning("heartbeat: could not extend %d leases (%s)", len(due), exc)
                continue
            for token, expires_at in due.items():
                if token in kept and token in self._running:
                    self._running[token].expires_at = expires_at

    async def _drain(self) -> None:
        """Let running invocations finish within the grace period; give back the rest."""
        tasks = [h.task for h in self._running.values() if h.task is not None]
        if tasks:
            log.info(
                "stopping: waiting up to %.0fs for %d running invocations",
                self.shutdown_grace_s,
                len(tasks),
            )
            _done, pending = await asyncio.wait(tasks, timeout=self.shutdown_grace_s)
            unsettled = [t for t, h in self._running.items() if not h.submitted]
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
            if unsettled:
                log.info("stopping: releasing %d unfinished invocations", len(unsettled))
                try:
                    await self.queue.release(unsettled)
                except Exception as exc:
                    log.warning("stopping: could not release leases (%s); they will expire", exc)


def response_limited(outcome: Outcome, limit: int) -> Outcome:
    """A response over ``limit`` bytes is a function error, as in Lambda."""
    if isinstance(outcome, Success) and len(outcome.payload) > limit:
        return FunctionError(
            "Function.ResponseSizeTooLarge",
            f"Response payload size ({len(outcome.payload)} bytes) exceeded maximum allowed "
            f"payload size ({limit} bytes).",
            log=outcome.log,
        )
    return outcome


def _error_reason(outcome: Outcome) -> str:
    """``eventwire_errors_total{reason}`` of an outcome that is not a success."""
    if isinstance(outcome, FunctionError):
        return "timeout" if outcome.error_type == "Task.TimedOut" else "error"
    return "system"
