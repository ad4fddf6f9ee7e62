"""What happens after an attempt: pure decisions, computed here and persisted by the queue.

A retry is never a ``sleep``: it is a :class:`Decision` with the time the next
attempt becomes available, written into the queue with the settle.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime, timedelta

from broker.config.models import Backoff, RetryPolicy
from broker.models import (
    Condition,
    FunctionError,
    Invocation,
    Outcome,
    State,
    Success,
)

SYSTEM_BACKOFF = Backoff(initial_s=1.0, multiplier=2.0, max_s=300.0, jitter=0.1)
"""System errors (the function could not be run) back off from 1 s to 5 min."""

STORE_BACKOFF = Backoff(initial_s=0.2, multiplier=2.0, max_s=10.0, jitter=0.2)
"""Reconnecting to an unreachable store backs off from 0.2 s to 10 s."""


@dataclass(frozen=True, slots=True)
class RecordCounts:
    """What one attempt of a mapping's batch did with records: invoked the function with
    them, failed them (a function error, a partial batch response, a fault), gave them up
    (dropped: to the DLQ) and sent them to the mapping's ``on_failure``."""

    invoked: int = 0
    failed: int = 0
    dropped: int = 0
    on_failure: int = 0


@dataclass(frozen=True, slots=True)
class Decision:
    """The invocation's next state after an attempt.

    ``condition`` is set when the invocation is finished (``Success``,
    ``RetriesExhausted``, ``EventAgeExceeded``); ``retry_at`` when it is to be
    tried again.
    """

    state: State
    function_errors: int
    system_errors: int
    retry_at: datetime | None = None
    condition: Condition | None = None
    records: RecordCounts | None = None
    """For a mapping's batch: what the attempt did with its records."""


def backoff_delay(retry: int, backoff: Backoff, rng: random.Random | None = None) -> float:
    """Seconds before retry number ``retry`` (1 for the first retry).

    ``initial * multiplier**(retry-1)`` capped at ``max``, then, when ``rng``
    is given, reduced by a random fraction of up to ``jitter`` so that retries
    of many invocations that failed together spread out.
    """
    if retry < 1:
        raise ValueError(f"retry numbers start at 1, got {retry}")
    delay = min(backoff.max_s, backoff.initial_s * backoff.multiplier ** (retry - 1))
    if rng is not None and backoff.jitter:
        delay *= 1.0 - rng.random() * backoff.jitter
    return delay


def event_age_s(invocation: Invocation, now: datetime) -> float:
    return (now - invocation.first_enqueued_at).total_seconds()


def is_expired(invocation: Invocation, policy: RetryPolicy, now: datetime) -> bool:
    """An asynchronous event older than its maximum age is not run at all."""
    return not invocation.sync and event_age_s(invocation, now) > policy.max_event_age_s


def decide(
    invocation: Invocation,
    outcome: Outcome,
    policy: RetryPolicy,
    now: datetime,
    rng: random.Random | None = None,
) -> Decision:
    """The next state of ``invocation`` after an attempt that ended with ``outcome``.

    Lambda's asynchronous rules: a function error (timeouts included) uses up
    one of ``max_attempts``; a system error is retried on its own backoff and
    does not; either way a retry that would start after the maximum event age
    fails the invocation now (look-ahead) with ``EventAgeExceeded``. The
    look-ahead uses the delay before jitter, so whether an event gets another
    try does not depend on chance. A throttle's ``retry_after_s`` is honoured
    as the least delay. Synchronous invocations are never retried.
    """
    rng = rng or random.Random()
    function_errors = invocation.function_errors
    system_errors = invocation.system_errors
    if isinstance(outcome, Success):
        return Decision(State.SUCCEEDED, function_errors, system_errors, None, Condition.SUCCESS)
    if isinstance(outcome, FunctionError):
        function_errors += 1
        if invocation.sync or function_errors >= policy.max_attempts:
            return Decision(
                State.FAILED, function_errors, system_errors, None, Condition.RETRIES_EXHAUSTED
            )
        backoff, retry = policy.backoff, function_errors
    else:
        system_errors += 1
        if invocation.sync:
            return Decision(
                State.FAILED, function_errors, system_errors, None, Condition.RETRIES_EXHAUSTED
            )
        backoff, retry = SYSTEM_BACKOFF, system_errors
    least_s = outcome.retry_after_s
    nominal_at = now + timedelta(seconds=max(backoff_delay(retry, backoff), least_s or 0.0))
    retry_at = now + timedelta(seconds=max(backoff_delay(retry, backoff, rng), least_s or 0.0))
    if (nominal_at - invocation.first_enqueued_at).total_seconds() > policy.max_event_age_s:
        return Decision(
            State.FAILED, function_errors, system_errors, None, Condition.EVENT_AGE_EXCEEDED
        )
    return Decision(State.PENDING, function_errors, system_errors, retry_at)
