"""The spans of :mod:`broker.observability.tracing`, made with OpenTelemetry.

Imported only when tracing is configured (``eventwire[tracing]``):
:func:`broker.observability.tracing.from_environment` builds an
:class:`OtelTracing` on a tracer provider set up from the standard ``OTEL_*``
variables (exporter, endpoint, sampler, resource, batching); tests give one
with the SDK's in-memory exporter.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import replace
from importlib.metadata import version
from typing import Any

from broker.errors import UsageError

try:
    from opentelemetry import trace
    from opentelemetry.context import Context
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import (
        BatchSpanProcessor,
        ConsoleSpanExporter,
        SpanExporter,
    )
    from opentelemetry.trace import Link, Span, SpanKind, Status, StatusCode
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
except ImportError:  # pragma: no cover - depends on the installed extras
    raise UsageError(
        "tracing (OTEL_* or the tracing section) needs OpenTelemetry: "
        "pip install 'eventwire[tracing]'"
    ) from None
from broker.models import (
    Enqueued,
    FunctionError,
    Invocation,
    NewInvocation,
    Outcome,
    Settlement,
    SystemFault,
)
from broker.observability.tracing import TRACE_LINKS, TRACEPARENT, AttemptTrace, EnqueueSpans

log = logging.getLogger("eventwire.tracing")

_PROPAGATOR = TraceContextTextMapPropagator()
_ROOT = Context()
"""The parent of an attempt whose invocation came untraced: none (not whatever ran before
in the task that leased it)."""


def _context(traceparent: object) -> Context | None:
    if not isinstance(traceparent, str):
        return None
    found = _PROPAGATOR.extract({TRACEPARENT: traceparent})
    return found if trace.get_current_span(found).get_span_context().is_valid else None


def _traceparent(span: Span) -> str | None:
    carrier: dict[str, str] = {}
    _PROPAGATOR.inject(carrier, context=trace.set_span_in_context(span))
    return carrier.get(TRACEPARENT)


def _links(traceparents: object) -> list[Link]:
    if not isinstance(traceparents, list):
        return []
    contexts = (_context(t) for t in traceparents)
    return [Link(trace.get_current_span(c).get_span_context()) for c in contexts if c is not None]


def _stamped(item: NewInvocation, span: Span) -> NewInvocation:
    source = {k: v for k, v in item.source.items() if k != TRACE_LINKS}
    traceparent = _traceparent(span)
    if traceparent is not None:
        source[TRACEPARENT] = traceparent
    return replace(item, source=source)


def _outcome_status(span: Span, outcome: Outcome | None) -> None:
    if isinstance(outcome, FunctionError | SystemFault):
        span.set_status(Status(StatusCode.ERROR, f"{outcome.error_type}: {outcome.message}"))
        attributes = {"exception.type": outcome.error_type, "exception.message": outcome.message}
        if isinstance(outcome, FunctionError) and outcome.trace:
            attributes["exception.stacktrace"] = "\n".join(outcome.trace)
        span.add_event("exception", attributes)
    elif outcome is None:
        span.set_status(Status(StatusCode.ERROR, "EventAgeExceeded"))


class _EnqueueSpans:
    def __init__(self, tracer: trace.Tracer, items: Sequence[NewInvocation]) -> None:
        self._spans: list[Span] = []
        stamped = []
        for item in items:
            span = tracer.start_span(
                f"enqueue {item.function}",
                context=_context(item.source.get(TRACEPARENT)),
                kind=SpanKind.PRODUCER,
                links=_links(item.source.get(TRACE_LINKS)),
                attributes={
                    "faas.invoked_name": item.function,
                    "eventwire.invocation_id": item.id,
                    "eventwire.origin": item.origin.value,
                    "eventwire.sync": item.sync,
                },
            )
            self._spans.append(span)
            stamped.append(_stamped(item, span))
        self.items: Sequence[NewInvocation] = stamped

    def end(self, answers: Sequence[Enqueued] | None, error: BaseException | None) -> None:
        for index, span in enumerate(self._spans):
            if answers is not None and index < len(answers):
                span.set_attribute("eventwire.created", answers[index].created)
                if not answers[index].created:  # an idempotency key seen before
                    span.set_attribute("eventwire.invocation_id", answers[index].id)
            if error is not None:
                span.record_exception(error)
                span.set_status(Status(StatusCode.ERROR, str(error) or type(error).__name__))
            span.end()


class _Attempt:
    def __init__(self, tracer: trace.Tracer, span: Span, invocation: Invocation) -> None:
        self._tracer = tracer
        self._span = span
        self._function = invocation.function
        self._follow_ons: list[Span] = []

    @contextlib.contextmanager
    def invoking(self) -> Iterator[str | None]:
        with self._tracer.start_as_current_span(
            f"invoke {self._function}",
            attributes={"faas.invoked_name": self._function},
            record_exception=False,
            set_status_on_exception=False,
        ) as span:
            yield _traceparent(span)

    def invoked(self, outcome: Outcome) -> None:
        _outcome_status(trace.get_current_span(), outcome)

    def settled(self, settlement: Settlement, outcome: Outcome | None, state: str) -> Settlement:
        span = self._span
        span.set_attribute("eventwire.outcome", settlement.attempt.status)
        span.set_attribute("eventwire.state", state)
        if settlement.retry_at is not None:
            span.set_attribute("eventwire.retry_at", settlement.retry_at.isoformat())
        _outcome_status(span, outcome)
        parent = trace.set_span_in_context(span)
        follow_ons = []
        for item in settlement.enqueue:
            child = self._tracer.start_span(
                f"enqueue {item.function}",
                context=parent,
                kind=SpanKind.PRODUCER,
                attributes={
                    "faas.invoked_name": item.function,
                    "eventwire.invocation_id": item.id,
                    "eventwire.origin": item.origin.value,
                },
            )
            self._follow_ons.append(child)
            follow_ons.append(_stamped(item, child))
        letter = settlement.dead_letter
        if letter is not None:
            self._follow_ons.append(
                self._tracer.start_span(
                    f"dead-letter {letter.function}",
                    context=parent,
                    kind=SpanKind.PRODUCER,
                    attributes={
                        "eventwire.dead_letter_id": letter.id,
                        "eventwire.condition": letter.condition.value,
                        "eventwire.attempts": letter.attempts,
                    },
                )
            )
        return replace(settlement, enqueue=tuple(follow_ons)) if follow_ons else settlement

    @contextlib.contextmanager
    def writing(self) -> Iterator[None]:
        try:
            with self._tracer.start_as_current_span(f"settle {self._function}"):
                yield
        finally:
            for span in self._follow_ons:
                span.end()


class OtelTracing:
    """Spans through OpenTelemetry's ``provider``."""

    enabled = True

    def __init__(self, provider: TracerProvider) -> None:
        self.provider = provider
        self._tracer = provider.get_tracer("eventwire", version("eventwire"))

    def enqueueing(self, items: Sequence[NewInvocation]) -> EnqueueSpans:
        return _EnqueueSpans(self._tracer, items)

    @contextlib.contextmanager
    def attempt(self, invocation: Invocation) -> Iterator[AttemptTrace]:
        with self._tracer.start_as_current_span(
            f"attempt {invocation.function}",
            context=_context(invocation.source.get(TRACEPARENT)) or _ROOT,
            kind=SpanKind.CONSUMER,
            attributes={
                "faas.invoked_name": invocation.function,
                "faas.invocation_id": invocation.request_id,
                "eventwire.invocation_id": invocation.id,
                "eventwire.attempt": invocation.attempts,
                "eventwire.origin": invocation.origin.value,
            },
        ) as span:
            yield _Attempt(self._tracer, span, invocation)

    def shutdown(self) -> None:
        self.provider.shutdown()


EXPORTERS = ("otlp", "console", "none")


def from_environment(env: Mapping[str, str]) -> OtelTracing:
    """A tracer provider as the ``OTEL_*`` variables say: ``OTEL_TRACES_EXPORTER`` (``otlp``,
    the default, ``console``), ``OTEL_EXPORTER_OTLP_(TRACES_)ENDPOINT`` and ``_PROTOCOL``,
    ``OTEL_SERVICE_NAME`` (default ``eventwire``), ``OTEL_RESOURCE_ATTRIBUTES``,
    ``OTEL_TRACES_SAMPLER``, ``OTEL_BSP_*``; the SDK reads most of them itself."""
    names = [n.strip() for n in env.get("OTEL_TRACES_EXPORTER", "otlp").split(",") if n.strip()]
    unknown = [n for n in names if n not in EXPORTERS]
    if unknown:
        raise UsageError(
            f"OTEL_TRACES_EXPORTER: unknown exporter {unknown[0]!r}; "
            f"expected {', '.join(EXPORTERS)} (comma-separated)"
        )
    attributes: dict[str, Any] = {}
    named = "OTEL_SERVICE_NAME" in env or "service.name=" in env.get("OTEL_RESOURCE_ATTRIBUTES", "")
    if not named:
        attributes["service.name"] = "eventwire"
    provider = TracerProvider(resource=Resource.create(attributes))
    for name in names:
        if name != "none":
            provider.add_span_processor(BatchSpanProcessor(_exporter(name, env)))
    endpoint = env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or env.get(
        "OTEL_EXPORTER_OTLP_ENDPOINT", "http://localhost:4318"
    )
    shown = [f"OTLP at {endpoint}" if name == "otlp" else name for name in names]
    log.info("tracing: exporting spans to %s", ", ".join(shown) or "nowhere")
    return OtelTracing(provider)


def _exporter(name: str, env: Mapping[str, str]) -> SpanExporter:
    if name == "console":
        return ConsoleSpanExporter()
    protocol = env.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or env.get(
        "OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"
    )
    if protocol == "http/protobuf":
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        return OTLPSpanExporter()
    raise UsageError(
        f"OTEL_EXPORTER_OTLP_PROTOCOL: {protocol!r} is not supported; expected "
        "http/protobuf (a collector takes it on port 4318)"
    )
