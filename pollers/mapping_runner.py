"""Running a kind's mappings: one supervised reader per mapping, and what they share.

:class:`MappingPoller` is the ``Poller`` for one source kind (``kafka``,
``amqp``, ``redis``). It runs a task per mapping of that kind, which

* reads nothing while the mapping is disabled (``eventwire mappings disable``),
  and stops its reader within a second of it being disabled;
* drives the kind's source adapter (:class:`~pollers.mapping_loop.Source`)
  through :func:`~pollers.mapping_loop.pump` with a
  :class:`~pollers.mapping_run.MappingRun`; when the source fails (the broker
  is unreachable, the topic is gone, the credentials are wrong) the mapping is
  ``failing`` with the reason, and it is started again after a backoff — the
  rest of the service runs on;
* hands seek requests (``eventwire mappings seek``) to the running loop.

A watcher reads every mapping's row once a second and writes back each one's
status, lag and iterator age.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from broker.aio.waits import close_within, wait_set
from broker.config.mappings import MappingConfig, SourceKind
from broker.config.models import Backoff
from broker.dispatch.retry import backoff_delay
from broker.observability.logs import log_fields
from broker.sources.pollers import PollerContext
from broker.store.mappings import (
    DISABLED,
    FAILING,
    RUNNING,
    STARTING,
    STOPPED,
    list_mappings,
    load_cuts,
    report_status,
)
from pollers.batching import Shaper, TraceOf
from pollers.mapping_loop import Source, pump
from pollers.mapping_run import DocumentsRun, MappingRun, Seek, SourceError

SourceFactory = Callable[[MappingConfig, PollerContext], Source]
RunFactory = Callable[..., MappingRun]
"""A run's class: :class:`MappingRun` or one made for a source kind."""

log = logging.getLogger("eventwire.mappings")

READER_BACKOFF = Backoff(initial_s=1.0, multiplier=2.0, max_s=60.0, jitter=0.2)
"""A failing mapping's reader starts again after 1 s, doubling up to a minute."""
WATCH_INTERVAL_S = 1.0
STOP_GRACE_S = 10.0


@dataclass(slots=True)
class _Mapping:
    config: MappingConfig
    desired: str = STARTING
    generation: int = -1
    seek_to: datetime | None = None
    run: MappingRun | None = None
    status: str = STARTING
    reason: str | None = None
    changed: asyncio.Event | None = None


class MappingPoller:
    """The ``Poller`` for every mapping of one source kind."""

    def __init__(
        self,
        context: PollerContext,
        kind: SourceKind,
        source: SourceFactory,
        shaper: Callable[[MappingConfig], Shaper],
        trace_of: TraceOf | None = None,
        run_kind: RunFactory = MappingRun,
    ) -> None:
        """``trace_of``: the ``traceparent`` a record's item came with, read only when
        the service traces; ``run_kind``: the run the kind's reader needs."""
        self.name = f"mappings-{kind.value}"
        self.context = context
        self.source = source
        self.shaper = shaper
        self.trace_of = trace_of if context.tracing.enabled else None
        self.run_kind = run_kind
        self.mappings = {
            m.name: _Mapping(m, changed=asyncio.Event())
            for m in context.config.mappings
            if m.kind is kind
        }
        self._stop = asyncio.Event()
        self._rng = random.Random()
        self.watched = asyncio.Event()

    def stop(self) -> None:
        self._stop.set()
        for state in self.mappings.values():
            if state.run is not None:
                state.run.stopping.set()
            if state.changed is not None:
                state.changed.set()

    async def start(self) -> None:
        await self._watch_once()
        log.info("%s: %d mappings", self.name, len(self.mappings))

    async def run(self) -> None:
        tasks = [
            asyncio.create_task(self._supervise(state), name=f"eventwire-mapping-{name}")
            for name, state in self.mappings.items()
        ]
        watcher = asyncio.create_task(self._watch(), name=f"eventwire-{self.name}-watch")
        try:
            await self._stop.wait()
        finally:
            # Readers stop at their next step; one stuck on its transport is cancelled
            # (nothing is lost: what it read and did not checkpoint is read again).
            everything = [*tasks, watcher]
            _done, stuck = await asyncio.wait(everything, timeout=STOP_GRACE_S)
            for task in stuck:
                log.warning(
                    "%s: %s did not stop in time; cancelling it", self.name, task.get_name()
                )
                task.cancel()
            if stuck:
                # A task that still runs after its cancel (e.g. in SQLAlchemy's shielded close
                # of a connection whose query waits on the store) must not hold the whole
                # service up: what its reader did not checkpoint is read again anyway.
                _done, still = await asyncio.wait(stuck, timeout=STOP_GRACE_S)
                for task in still:
                    log.error(
                        "%s: %s still runs after its cancellation; leaving it",
                        self.name,
                        task.get_name(),
                    )
            for task in everything:  # their errors were logged where they happened
                if task.done() and not task.cancelled():
                    task.exception()
            # The last word on each mapping's state is worth a moment, not a stop that hangs
            # on a store that does not answer (its next start reports afresh).
            if not await close_within(self._report_all(final=True), STOP_GRACE_S):
                log.warning("%s: could not record the mappings' final state", self.name)

    # ------------------------------------------------------------ one mapping

    async def _supervise(self, state: _Mapping) -> None:
        with log_fields(mapping=state.config.name, function=state.config.function):
            await self._supervised(state)

    async def _supervised(self, state: _Mapping) -> None:
        failures = 0
        name = state.config.name
        assert state.changed is not None
        while not self._stop.is_set():
            if state.desired == DISABLED:
                state.changed.clear()
                await state.changed.wait()
                continue
            try:
                documents = state.config.object_notifications is not None
                kind = DocumentsRun if documents else self.run_kind
                cuts = {} if documents else await load_cuts(self.context.engine, name)
                run = kind(
                    state.config,
                    self.context,
                    generation=max(state.generation, 0),
                    cuts=cuts,
                    shape=self.shaper(state.config),
                    trace_of=self.trace_of,
                )
                state.run = run
                if state.desired == DISABLED or self._stop.is_set():
                    continue
                await pump(run, self.source(state.config, self.context))
                failures = 0
                state.status = STOPPED
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                failures += 1
                delay = backoff_delay(failures, READER_BACKOFF, self._rng)
                state.status, state.reason = FAILING, _reason(exc)
                log.warning("mapping %s failing: %s; retrying in %.1fs", name, state.reason, delay)
                await self._report(state)
                state.changed.clear()
                await wait_set(state.changed, delay)
            finally:
                state.run = None

    # ------------------------------------------------------------ watching the rows

    async def _watch(self) -> None:
        failures = 0
        while True:
            await wait_set(self._stop, WATCH_INTERVAL_S)
            if self._stop.is_set():
                return
            try:
                await self._watch_once()
                await self._report_all()
                failures = 0
            except Exception as exc:
                failures += 1
                log.warning("%s: cannot read mapping states (%s)", self.name, exc)

    async def _watch_once(self) -> None:
        rows = {r.name: r for r in await list_mappings(self.context.engine)}
        for name, state in self.mappings.items():
            row = rows.get(name)
            if row is None:
                continue
            if row.desired != state.desired:
                if state.desired != STARTING:
                    log.info("mapping %s %s", name, row.desired)
                state.desired = row.desired
                if row.desired == DISABLED and state.run is not None:
                    state.run.stopping.set()
                assert state.changed is not None
                state.changed.set()
            if state.generation < 0:
                state.generation = row.generation
            elif row.generation != state.generation and row.seek_to is not None:
                state.generation = row.generation
                if state.run is not None:
                    log.info("mapping %s: seeking to %s", name, row.seek_to.isoformat())
                    state.run.seek = Seek(row.generation, row.seek_to)
                    state.run.seek_wanted.set()
        self.watched.set()

    async def _report_all(self, final: bool = False) -> None:
        for state in self.mappings.values():
            await self._report(state, final)

    async def _report(self, state: _Mapping, final: bool = False) -> None:
        run = state.run
        if run is not None:
            run.measure_position()
        status = state.status
        if run is not None and run.connected:
            status, state.status, state.reason = RUNNING, RUNNING, None
        elif (final or state.desired == DISABLED) and status != FAILING:
            status = STOPPED  # the reader has returned
        try:
            await report_status(
                self.context.engine,
                state.config.name,
                status=status,
                reason=state.reason if status == FAILING else None,
                lag=run.lag if run is not None else None,
                iterator_age_ms=run.iterator_age_ms if run is not None else None,
                owner=self.context.owner,
                now=self.context.timer.now(),
            )
        except Exception as exc:
            log.warning("mapping %s: cannot record its status (%s)", state.config.name, exc)


def _reason(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return text if isinstance(exc, SourceError) else f"{type(exc).__name__}: {text}".rstrip(": ")
