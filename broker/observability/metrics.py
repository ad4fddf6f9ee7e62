"""The Prometheus metrics of one ``serve`` process, each under its Lambda meaning.

A :class:`Metrics` holds its own registry, so that several services in one
process (as in tests) keep their figures apart. ``/metrics`` on the API
listener serves it, and so does ``metrics.listen`` (``EVENTWIRE_METRICS_LISTEN``)
for a process without the API. Each process reports what it ran; Prometheus
adds the processes up. Invocations that run in a process pool are counted
here, by the dispatcher that hands them to the pool.

The figures of one function's attempts are bound to it once
(:meth:`Metrics.function`), so that the dispatcher's hot path does no label
lookups.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest, start_wsgi_server
from prometheus_client.registry import Collector

from broker.errors import UsageError
from broker.observability.pools import PoolStats

__all__ = [
    "CONTENT_TYPE_LATEST",
    "FunctionMetrics",
    "MappingMetrics",
    "Metrics",
    "ScheduleMetrics",
    "serving_metrics",
]

log = logging.getLogger("eventwire.metrics")

DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900)
"""Seconds, up to Lambda's longest timeout (15 minutes)."""
AGE_BUCKETS = (0.01, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 900, 1800, 3600, 3 * 3600, 6 * 3600)
"""Seconds, up to Lambda's longest maximum event age (6 hours)."""

ERROR_REASONS = ("error", "timeout", "system")
"""``eventwire_errors_total{reason}``: the function raised or returned an error; it ran
past its timeout; the invoker or the broker failed around it."""
DROP_REASONS = ("max_event_age", "retries_exhausted")


@dataclass(frozen=True, slots=True)
class FunctionMetrics:
    """One function's figures, bound to its label."""

    invocations: Counter
    errors: dict[str, Counter]
    duration: Histogram
    concurrent: Gauge
    event_age: Histogram
    retries: Counter
    dropped: dict[str, Counter]
    dead_letters: Counter


@dataclass(frozen=True, slots=True)
class MappingMetrics:
    """One event source mapping's figures, bound to its label."""

    polled: Counter
    filtered: Counter
    enqueued: Counter
    invoked: Counter
    failed: Counter
    dropped: Counter
    on_failure: Counter
    lag: Gauge
    iterator_age: Gauge
    paused: Gauge


@dataclass(frozen=True, slots=True)
class ScheduleMetrics:
    """One schedule's figures, bound to its label."""

    fires: Counter
    missed: Counter
    skipped: Counter
    lateness: Histogram


LATENESS_BUCKETS = (0.01, 0.05, 0.1, 0.5, 1, 5, 15, 60, 300, 900, 3600)
INIT_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
"""A pool process's init: the Python bootstrap takes ~0.1-0.3 s, a heavy import seconds."""
"""Seconds past its slot a schedule fired (a catch-up fires hours late)."""


class Metrics:
    """Every figure a ``serve`` process exposes."""

    def __init__(self) -> None:
        self.registry = registry = CollectorRegistry(auto_describe=True)
        self.invocations = Counter(
            "eventwire_invocations",
            "Attempts a function ran (Lambda's Invocations).",
            ["function"],
            registry=registry,
        )
        self.errors = Counter(
            "eventwire_errors",
            "Attempts that ended in an error, a timeout or a system error (Lambda's Errors).",
            ["function", "reason"],
            registry=registry,
        )
        self.duration = Histogram(
            "eventwire_duration_seconds",
            "How long each attempt ran (Lambda's Duration).",
            ["function"],
            buckets=DURATION_BUCKETS,
            registry=registry,
        )
        self.concurrent = Gauge(
            "eventwire_concurrent_executions",
            "Attempts running now in this process (Lambda's ConcurrentExecutions).",
            ["function"],
            registry=registry,
        )
        self.received = Counter(
            "eventwire_async_events_received",
            "Asynchronous events taken up, counted at their first attempt by the process "
            "that runs it, whoever enqueued them (Lambda's AsyncEventsReceived).",
            ["function", "source"],
            registry=registry,
        )
        self.event_age = Histogram(
            "eventwire_async_event_age_seconds",
            "From an asynchronous event's first enqueue to the start of each of its attempts "
            "(Lambda's AsyncEventAge).",
            ["function"],
            buckets=AGE_BUCKETS,
            registry=registry,
        )
        self.retries = Counter(
            "eventwire_retries",
            "Attempts that failed and are to be tried again.",
            ["function"],
            registry=registry,
        )
        self.dropped = Counter(
            "eventwire_async_events_dropped",
            "Events given up without a successful run, by reason; the DLQ and an on-failure "
            "destination get them first (Lambda's AsyncEventsDropped).",
            ["function", "reason"],
            registry=registry,
        )
        self.dead_letters = Counter(
            "eventwire_dead_letters",
            "Events given up and kept in the dead-letter queue (every one is, unless a "
            "redrive finishes it).",
            ["function"],
            registry=registry,
        )
        self.pending = Gauge(
            "eventwire_pending_invocations",
            "Invocations waiting to run, as the store holds them: every process that "
            "refreshes it reports the same figure (aggregate with max, not sum).",
            ["function"],
            registry=registry,
        )
        self.oldest_pending_age = Gauge(
            "eventwire_oldest_pending_age_seconds",
            "How long the longest-waiting pending invocation has waited since its first "
            "enqueue; 0 with none pending (the store's view, as eventwire_pending_invocations).",
            ["function"],
            registry=registry,
        )
        self.dlq_size = Gauge(
            "eventwire_dlq_size",
            "Dead letters kept and not redriven (the store's view).",
            ["function"],
            registry=registry,
        )
        self.mapping_records = Counter(
            "eventwire_mapping_records",
            "Records of a mapping by what became of them, as Lambda counts events: read "
            "(polled: PolledEventCount), left out by its filters (filtered: "
            "FilteredOutEventCount), enqueued in batches (enqueued), in an attempt that "
            "invoked the function (invoked: InvokedEventCount, again on each retry), in an "
            "attempt that failed or reported them failed (failed: FailedInvokeEventCount), "
            "given up on (dropped: DroppedEventCount) and sent, in the failure record of their "
            "batch, to the mapping's on_failure (on_failure: "
            "OnFailureDestinationDeliveredEventCount; an external target's delivery is "
            "then retried on its own).",
            ["mapping", "outcome"],
            registry=registry,
        )
        self.mapping_lag = Gauge(
            "eventwire_mapping_lag",
            "Records at the source not enqueued yet: Kafka's offset lag over the partitions "
            "this process reads (Lambda's OffsetLag), a stream's lag and pending entries, "
            "the messages a RabbitMQ consumer holds.",
            ["mapping"],
            registry=registry,
        )
        self.mapping_partition_lag = Gauge(
            "eventwire_mapping_partition_lag",
            "Records of a Kafka partition not enqueued yet (Lambda's OffsetLag), reported by "
            "the process that reads the partition.",
            ["mapping", "partition"],
            registry=registry,
        )
        self._lagging: dict[str, set[str]] = {}
        self.mapping_iterator_age = Gauge(
            "eventwire_mapping_iterator_age_seconds",
            "Age of the newest record enqueued when it was (Lambda's IteratorAge); 0 once "
            "the mapping has caught up.",
            ["mapping"],
            registry=registry,
        )
        self.mapping_paused = Gauge(
            "eventwire_mapping_backpressure",
            "1 while a mapping holds batches back because their lanes are full.",
            ["mapping"],
            registry=registry,
        )
        self._mappings: dict[str, MappingMetrics] = {}
        self.schedule_fires = Counter(
            "eventwire_schedule_fires",
            "Slots a schedule enqueued an invocation for (by the leading scheduler).",
            ["schedule"],
            registry=registry,
        )
        self.schedule_missed = Counter(
            "eventwire_schedule_missed",
            "Slots a schedule let pass without running them (catch_up none or latest, or "
            "past its catch-up window).",
            ["schedule"],
            registry=registry,
        )
        self.schedule_skipped = Counter(
            "eventwire_schedule_skipped",
            "Slots not run because the previous run was still going (overlap skip).",
            ["schedule"],
            registry=registry,
        )
        self.schedule_lateness = Histogram(
            "eventwire_schedule_lateness_seconds",
            "How long after its slot each fire enqueued its invocation.",
            ["schedule"],
            buckets=LATENESS_BUCKETS,
            registry=registry,
        )
        self._schedules: dict[str, ScheduleMetrics] = {}
        self.delivery_failures = Counter(
            "eventwire_destination_delivery_failures",
            "Attempts to deliver an invocation record to an external destination (a queue, "
            "topic, stream or webhook) that failed (Lambda's DestinationDeliveryFailures).",
            ["destination"],
            registry=registry,
        )
        self.dead_letter_errors = Counter(
            "eventwire_dead_letter_errors",
            "Attempts to send a function's failed event to its external dead-letter target "
            "(a queue, topic, stream or webhook) that failed (Lambda's DeadLetterErrors).",
            ["function"],
            registry=registry,
        )
        self.pool_workers = Gauge(
            "eventwire_pool_workers",
            "Processes of a function's pool in this process by state: idle (warm, waiting "
            "for work), busy (running an invocation), starting (in their init); refreshed "
            "every 2 s.",
            ["function", "state"],
            registry=registry,
        )
        self.cold_starts = Counter(
            "eventwire_cold_starts",
            "Processes of a function's pool started and ready (Lambda's cold starts).",
            ["function"],
            registry=registry,
        )
        self.init_duration = Histogram(
            "eventwire_init_duration_seconds",
            "From a pool process's spawn to its first ask for work (Lambda's Init Duration).",
            ["function"],
            buckets=INIT_BUCKETS,
            registry=registry,
        )
        self.workers_killed = Counter(
            "eventwire_workers_killed",
            "Processes of a function's pool that ended while wanted: killed at their "
            "invocation's deadline (timeout), out of memory (memory) or exited by themselves "
            "(exit). Stopping an idle one or at shutdown does not count.",
            ["function", "reason"],
            registry=registry,
        )
        self._throttles: dict[str, int] = {}
        registry.register(_StoredCounters(self._throttles))
        self._functions: dict[str, FunctionMetrics] = {}
        self._received: dict[tuple[str, str], Counter] = {}

    def function(self, name: str) -> FunctionMetrics:
        """The figures of function ``name``, bound once."""
        bound = self._functions.get(name)
        if bound is None:
            bound = self._functions[name] = FunctionMetrics(
                invocations=self.invocations.labels(name),
                errors={r: self.errors.labels(name, r) for r in ERROR_REASONS},
                duration=self.duration.labels(name),
                concurrent=self.concurrent.labels(name),
                event_age=self.event_age.labels(name),
                retries=self.retries.labels(name),
                dropped={r: self.dropped.labels(name, r) for r in DROP_REASONS},
                dead_letters=self.dead_letters.labels(name),
            )
        return bound

    def mapping(self, name: str) -> MappingMetrics:
        """The figures of mapping ``name``, bound once."""
        bound = self._mappings.get(name)
        if bound is None:
            records = self.mapping_records
            bound = self._mappings[name] = MappingMetrics(
                polled=records.labels(name, "polled"),
                filtered=records.labels(name, "filtered"),
                enqueued=records.labels(name, "enqueued"),
                invoked=records.labels(name, "invoked"),
                failed=records.labels(name, "failed"),
                dropped=records.labels(name, "dropped"),
                on_failure=records.labels(name, "on_failure"),
                lag=self.mapping_lag.labels(name),
                iterator_age=self.mapping_iterator_age.labels(name),
                paused=self.mapping_paused.labels(name),
            )
        return bound

    def set_partition_lag(self, mapping: str, lags: Mapping[str, int]) -> None:
        """The lag of each partition ``mapping`` reads here now; partitions it no longer
        reads (taken over by another process) stop being reported."""
        reported = self._lagging.setdefault(mapping, set())
        for gone in reported - lags.keys():
            self.mapping_partition_lag.remove(mapping, gone)
        for partition, lag in lags.items():
            self.mapping_partition_lag.labels(mapping, partition).set(lag)
        reported.intersection_update(lags)
        reported.update(lags)

    def schedule(self, name: str) -> ScheduleMetrics:
        """The figures of schedule ``name``, bound once."""
        bound = self._schedules.get(name)
        if bound is None:
            bound = self._schedules[name] = ScheduleMetrics(
                fires=self.schedule_fires.labels(name),
                missed=self.schedule_missed.labels(name),
                skipped=self.schedule_skipped.labels(name),
                lateness=self.schedule_lateness.labels(name),
            )
        return bound

    def received_from(self, name: str, source: str) -> Counter:
        """``eventwire_async_events_received_total`` of ``name`` from ``source`` (its origin:
        api, schedule, destination, redrive, notification)."""
        bound = self._received.get((name, source))
        if bound is None:
            bound = self._received[name, source] = self.received.labels(name, source)
        return bound

    def set_backlog(
        self,
        function: str,
        *,
        pending: int,
        oldest_age_s: float,
        dead_letters: int,
        throttles: int = 0,
    ) -> None:
        """The store's backlog of ``function`` (:mod:`broker.store.backlog` refreshes it)."""
        self._throttles[function] = throttles
        self.pending.labels(function).set(pending)
        self.oldest_pending_age.labels(function).set(oldest_age_s)
        self.dlq_size.labels(function).set(dead_letters)

    # PoolObserver: what the process invokers tell, on the event loop.

    def cold_start(self, function: str, init_s: float) -> None:
        self.cold_starts.labels(function).inc()
        self.init_duration.labels(function).observe(init_s)

    def worker_killed(self, function: str, reason: str) -> None:
        self.workers_killed.labels(function, reason).inc()

    def set_pool(self, function: str, stats: PoolStats) -> None:
        """How many processes of ``function``'s pool are idle, busy and starting now."""
        for state, count in (
            ("idle", stats.idle),
            ("busy", stats.busy),
            ("starting", stats.starting),
        ):
            self.pool_workers.labels(function, state).set(count)

    def exposition(self) -> bytes:
        """The Prometheus text format (``CONTENT_TYPE_LATEST``)."""
        return generate_latest(self.registry)


@contextmanager
def serving_metrics(metrics: Metrics, listen: str | None) -> Iterator[str | None]:
    """``GET /metrics`` on ``listen`` (``host:port``) while open, answered from a thread of
    its own; gives the URL (None without ``listen``)."""
    if listen is None:
        yield None
        return
    host, _, port = listen.rpartition(":")
    host = host.strip("[]") or "0.0.0.0"
    try:
        server, thread = start_wsgi_server(int(port), host, registry=metrics.registry)
    except OSError as exc:
        raise UsageError(
            f"metrics listen {listen}: {exc.strerror or exc} (EVENTWIRE_METRICS_LISTEN)"
        ) from None
    shown = f"[{host}]" if ":" in host else host
    url = f"http://{shown}:{server.server_address[1]}/metrics"
    log.info("metrics: serving on %s", url)
    try:
        yield url
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


class _StoredCounters(Collector):
    """``eventwire_throttles_total``: the store's count, kept across every process and
    restart (Lambda's Throttles), as a counter."""

    def __init__(self, throttles: dict[str, int]) -> None:
        self.throttles = throttles

    def describe(self) -> list[Metric]:
        return [self._family()]

    def collect(self) -> list[Metric]:
        family = self._family()
        for function, count in list(self.throttles.items()):
            family.add_metric([function], count)
        return [family]

    @staticmethod
    def _family() -> CounterMetricFamily:
        return CounterMetricFamily(
            "eventwire_throttles",
            "Leases a function's reserved concurrency (or the account's) held back, in all "
            "(Lambda's Throttles; the store's view, the same in every process).",
            labels=["function"],
        )
