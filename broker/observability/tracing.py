"""Traces that follow an event, not a process: the spans of an invocation's life.

An invocation carries the W3C trace context of its ``enqueue`` span in
``source["traceparent"]``, stored with it, so that whichever process later runs
an attempt, settles it, dead-letters it or redrives it continues the same trace:

``enqueue FUNCTION`` (producer)
    when the invocation enters the queue; its parent is the ``traceparent`` that
    came with the event (the Invoke API's and a webhook's HTTP header, a Kafka
    record's header, an AMQP header, a Redis Streams field), and a mapping's batch
    links to each of its records' contexts.
``attempt FUNCTION`` (consumer)
    one per attempt, child of ``enqueue``: a retry is its sibling, and so is the
    attempt of a redriven invocation (the redrive keeps the trace context).
``invoke FUNCTION``
    child of ``attempt``, the handler's run: an in-process handler finds it as the
    current span; process and HTTP invokers pass it on as Lambda does
    (``Lambda-Runtime-Trace-Id``, ``_X_AMZN_TRACE_ID``, ``traceparent``).
``settle FUNCTION``, ``dead-letter FUNCTION``, ``enqueue TARGET``
    children of ``attempt``: the outcome's write, its dead letter, and each
    destination's invocation (whose own attempts continue the trace).

This module holds what the core sees: the :class:`Tracing` protocol and
:data:`NO_TRACING`, which does nothing and imports nothing; the OpenTelemetry
implementation is :mod:`broker.observability.otel` (``eventwire[tracing]``), made
only when tracing is configured (:mod:`broker.observability.trace_config`).
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager
from typing import Any, Protocol

from broker.models import Enqueued, Invocation, NewInvocation, Outcome, Settlement

TRACEPARENT = "traceparent"
"""The key of an invocation's trace context in its ``source``, and the W3C header."""
TRACE_LINKS = "trace_links"
"""A new invocation's ``source`` key for the contexts it links to (a batch's records);
the enqueue span takes them, the stored invocation does not keep them."""

_TRACEPARENT = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$")
_XRAY_ROOT = re.compile(r"Root=1-([0-9a-f]{8})-([0-9a-f]{24})")
_XRAY_PARENT = re.compile(r"Parent=([0-9a-f]{16})")
_XRAY_SAMPLED = re.compile(r"Sampled=([01])")


def trace_id(traceparent: object) -> str | None:
    """The trace id (32 hex digits) of a W3C ``traceparent``; None for anything else."""
    if isinstance(traceparent, str):
        found = _TRACEPARENT.match(traceparent)
        if found and found.group(1) != "0" * 32:
            return found.group(1)
    return None


def valid_traceparent(value: object) -> str | None:
    """``value`` when it is a W3C ``traceparent`` of version 00 with a real trace id."""
    return value if trace_id(value) is not None else None  # type: ignore[return-value]


def header_traceparent(value: object) -> str | None:
    """A ``traceparent`` header's value as a transport gives it (text or bytes), when valid."""
    if isinstance(value, bytes):
        value = value.decode("ascii", "replace")
    return valid_traceparent(value.strip()) if isinstance(value, str) else None


def from_xray(header: str | None) -> str | None:
    """An AWS X-Ray trace header (``Root=1-…;Parent=…;Sampled=1``) as a ``traceparent``."""
    if not header:
        return None
    root, parent = _XRAY_ROOT.search(header), _XRAY_PARENT.search(header)
    if root is None or parent is None:
        return None
    sampled = _XRAY_SAMPLED.search(header)
    flags = "00" if sampled is not None and sampled.group(1) == "0" else "01"
    return f"00-{root.group(1)}{root.group(2)}-{parent.group(1)}-{flags}"


def xray_header(traceparent: str | None) -> str | None:
    """A ``traceparent`` as Lambda's trace header (``Lambda-Runtime-Trace-Id``,
    ``_X_AMZN_TRACE_ID``): ``Root=1-{8 hex}-{24 hex};Parent={span};Sampled={0|1}``."""
    found = _TRACEPARENT.match(traceparent) if traceparent else None
    if found is None:
        return None
    trace, span, flags = found.groups()
    sampled = int(flags, 16) & 1
    return f"Root=1-{trace[:8]}-{trace[8:]};Parent={span};Sampled={sampled}"


def incoming_traceparent(headers: Mapping[str, str]) -> str | None:
    """The trace context an HTTP request brings: its ``traceparent``, else its AWS
    ``X-Amzn-Trace-Id`` (what the AWS SDKs send when they run traced)."""
    return valid_traceparent(headers.get(TRACEPARENT)) or from_xray(headers.get("X-Amzn-Trace-Id"))


def with_parent(source: Mapping[str, Any], traceparent: str | None) -> dict[str, Any]:
    """``source`` with ``traceparent`` as its trace context (unchanged when None)."""
    return {**source, TRACEPARENT: traceparent} if traceparent else dict(source)


def batch_context(traceparents: Sequence[str | None]) -> dict[str, Any]:
    """The ``source`` keys of a batch whose records came with ``traceparents``: the one
    context they share as parent, else links to each (no keys when none came traced)."""
    found = list(dict.fromkeys(t for t in traceparents if t is not None))
    if not found:
        return {}
    if len(found) == 1:
        return {TRACEPARENT: found[0]}
    return {TRACE_LINKS: found}


class EnqueueSpans(Protocol):
    """The ``enqueue`` spans of one batch, open while the queue writes it."""

    @property
    def items(self) -> Sequence[NewInvocation]:
        """The batch, each invocation carrying its span's context."""
        ...

    def end(self, answers: Sequence[Enqueued] | None, error: BaseException | None) -> None:
        """The write ended: with the queue's ``answers``, or with ``error``."""
        ...


class AttemptTrace(Protocol):
    """The spans of one attempt, open while it runs (see the module's text)."""

    def invoking(self) -> AbstractContextManager[str | None]:
        """Around the invoker's call: the ``invoke`` span, current within; yields its
        ``traceparent`` for invokers that pass it on (None when not traced)."""
        ...

    def invoked(self, outcome: Outcome) -> None:
        """Within :meth:`invoking`: what the invoker answered."""
        ...

    def settled(self, settlement: Settlement, outcome: Outcome | None, state: str) -> Settlement:
        """The attempt's outcome is known: ``settlement`` with each destination's
        invocation carrying the context of its own span; the dead letter's span."""
        ...

    def writing(self) -> AbstractContextManager[None]:
        """Around the write of the settlement: the ``settle`` span."""
        ...


class Tracing(Protocol):
    """What makes spans: :data:`NO_TRACING`, or OpenTelemetry's when configured."""

    @property
    def enabled(self) -> bool: ...

    def enqueueing(self, items: Sequence[NewInvocation]) -> EnqueueSpans:
        """Start the ``enqueue`` span of each of ``items``."""
        ...

    def attempt(self, invocation: Invocation) -> AbstractContextManager[AttemptTrace]:
        """The ``attempt`` span of the attempt ``invocation`` was just leased for."""
        ...

    def shutdown(self) -> None:
        """Export what is still buffered; called once, as the process stops."""
        ...


_NOTHING: AbstractContextManager[None] = contextlib.nullcontext()
"""Reusable: entering it does nothing and gives None."""


class _NoAttempt:
    """An attempt untraced: every step a no-op."""

    def invoking(self) -> AbstractContextManager[str | None]:
        return _NOTHING

    def invoked(self, outcome: Outcome) -> None:
        return None

    def settled(self, settlement: Settlement, outcome: Outcome | None, state: str) -> Settlement:
        return settlement

    def writing(self) -> AbstractContextManager[None]:
        return _NOTHING


class _NoSpans:
    def __init__(self, items: Sequence[NewInvocation]) -> None:
        self.items = items

    def end(self, answers: Sequence[Enqueued] | None, error: BaseException | None) -> None:
        return None


class NoTracing:
    """Tracing not configured: no spans, no OpenTelemetry import, next to no cost."""

    enabled = False
    _attempt: AbstractContextManager[AttemptTrace] = contextlib.nullcontext(_NoAttempt())

    def enqueueing(self, items: Sequence[NewInvocation]) -> EnqueueSpans:
        return _NoSpans(items)

    def attempt(self, invocation: Invocation) -> AbstractContextManager[AttemptTrace]:
        return self._attempt

    def shutdown(self) -> None:
        return None


NO_TRACING: Tracing = NoTracing()
