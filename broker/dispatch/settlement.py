"""From an attempt's outcome to the :class:`Settlement` the queue applies atomically.

Pure: given the lease, the outcome and the time, it decides the next state
(:func:`broker.dispatch.retry.decide`), and for a finished asynchronous invocation
builds Lambda's invocation record for its destination and its DLQ entry.
"""

from __future__ import annotations

import random
from dataclasses import replace
from datetime import datetime

from broker.destinations import FollowOns
from broker.destinations.external import dead_letter_headers, error_code
from broker.destinations.records import invocation_record
from broker.dispatch.retry import Decision, decide
from broker.functions.catalog import Deployed
from broker.ids import new_id
from broker.models import (
    AttemptRecord,
    Condition,
    DeadLetter,
    FunctionError,
    Lease,
    Outcome,
    Settlement,
    State,
    Success,
    SystemFault,
)


def attempt_status(outcome: Outcome | None) -> str:
    if outcome is None:
        return "expired"
    if isinstance(outcome, Success):
        return "success"
    if isinstance(outcome, SystemFault):
        return "system_error"
    return "timeout" if outcome.timed_out else "error"


def expired_decision(lease: Lease) -> Decision:
    inv = lease.invocation
    return Decision(
        State.FAILED, inv.function_errors, inv.system_errors, None, Condition.EVENT_AGE_EXCEEDED
    )


def settle_attempt(
    lease: Lease,
    outcome: Outcome | None,
    function: Deployed,
    started_at: datetime,
    duration_ms: float,
    now: datetime,
    rng: random.Random | None = None,
) -> tuple[Settlement, Decision]:
    """The settlement of one attempt; ``outcome`` None means the event expired unrun."""
    inv = lease.invocation
    if outcome is None:
        # The lease counted an attempt that never ran.
        inv = replace(inv, attempts=inv.attempts - 1)
        decision = expired_decision(lease)
    else:
        decision = decide(inv, outcome, function.config.retry, now, rng)
    error = outcome if isinstance(outcome, FunctionError | SystemFault) else None
    attempt = AttemptRecord(
        number=lease.invocation.attempts,
        started_at=started_at,
        duration_ms=duration_ms,
        status=attempt_status(outcome),
        error_type=error.error_type if error else None,
        error_message=error.message if error else None,
        error_trace=error.trace if isinstance(error, FunctionError) else (),
        log_excerpt=outcome.log or None if outcome is not None else None,
    )
    error_type: str | None = error.error_type if error else None
    error_message: str | None = error.message if error else None
    if outcome is None:
        error_type, error_message = "EventAgeExceeded", "event expired before it could run"
    follow_ons = FollowOns(invocation_id=inv.id, function=inv.function)
    if decision.condition is not None and not inv.sync:
        destination = function.on_success if outcome_is_success(outcome) else function.on_failure
        if destination is not None:
            record = invocation_record(inv, outcome, decision.condition, function.arn, now)
            destination.plan(record, follow_ons)
        follow_ons.dead_letter |= decision.state is State.FAILED
        if decision.state is State.FAILED and function.dead_letter is not None:
            headers = dead_letter_headers(
                inv.request_id, error_code(outcome), error_message or decision.condition.value
            )
            function.dead_letter.plan_dead_letter(inv.payload, headers, follow_ons)
    dead_letter = None
    if follow_ons.dead_letter:
        dead_letter = DeadLetter(
            id=new_id(),
            invocation_id=inv.id,
            request_id=inv.request_id,
            function=inv.function,
            payload=inv.payload,
            origin=inv.origin,
            condition=decision.condition or Condition.RETRIES_EXHAUSTED,
            error_type=error_type,
            error_message=error_message,
            attempts=inv.attempts,
            first_enqueued_at=inv.first_enqueued_at,
            dead_at=now,
            source=inv.source,
        )
    settlement = Settlement(
        lease_token=lease.token,
        invocation_id=inv.id,
        state=decision.state,
        attempt=attempt,
        retry_at=decision.retry_at,
        function_errors=decision.function_errors,
        system_errors=decision.system_errors,
        result=outcome.payload if isinstance(outcome, Success) else None,
        error_type=error_type,
        error_message=error_message,
        enqueue=tuple(follow_ons.enqueue),
        dead_letter=dead_letter,
    )
    return settlement, decision


def outcome_is_success(outcome: Outcome | None) -> bool:
    return isinstance(outcome, Success)
