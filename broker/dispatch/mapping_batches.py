"""What happens after an attempt of a mapping's batch: Lambda's stream rules, kept in the queue.

A batch from a mapping is one invocation. Its ``source`` carries the
mapping's failure policy (:class:`MappingPolicy`, written by the poller) and
the state of its retries::

    {"mapping": {policy}, "position": {where the records are},
     "records": records in the current piece,
     "tries": failed attempts of the current piece, "rest": [pieces still to run],
     "dropped": pieces given up on}

The rules (applied by the dispatcher to invocations of origin ``mapping``):

* the batch is retried in place (the invocation stays at the head of its
  lane, so nothing behind it runs) until it succeeds, ``max_retry_attempts``
  is used up (-1: never) or its oldest record is older than ``max_record_age``;
* with ``report_batch_item_failures`` a partial batch response is honoured:
  the retry holds only the failed records (for streams, from the lowest
  failed record on), and counts as an attempt;
* with ``bisect_on_error`` a batch that fails as a whole is split in two;
  the first half runs next and the second waits in ``rest`` (a split is not
  an attempt);
* a piece given up on goes to the dead-letter queue (the piece's event, so
  it can be redriven) and Lambda's failure record for it to ``on_failure``
  when that is a function; then the next piece runs, and the lane moves on;
* a record whose event alone exceeds the payload limit is never run: the
  poller enqueues it on its own, marked ``oversized``, and it is given up on
  at once (``MaximumPayloadSizeExceeded``) when its turn in the lane comes.

A batch from a queue that redelivers by itself (SQS: ``redelivered_by_source``)
is run once, as Lambda runs an SQS batch once per receive: it ends
``succeeded`` (a partial batch response is kept as its result, for the poller
to delete only what succeeded) or ``failed``, never retried in place nor
dead-lettered here: the poller leaves its messages in the queue, which
delivers them again after their visibility timeout and applies its own
redrive policy. Only an attempt the function could not make (a system
fault) is tried again, on the system backoff.

The invocation ends ``succeeded`` when every piece succeeded, ``failed``
when any was given up on. Retries are persisted decisions (a ``pending``
settlement with a new payload), never sleeps.
"""

from __future__ import annotations

import json
import random
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from broker.config.models import Backoff
from broker.destinations import FollowOns, parse_destination
from broker.dispatch.retry import SYSTEM_BACKOFF, Decision, RecordCounts, backoff_delay
from broker.dispatch.settlement import attempt_status
from broker.events.batch_results import (
    BatchOutcome,
    MappingCondition,
    mapping_failure_record,
    parse_batch_response,
)
from broker.events.batches import bisect_event, encode_event, event_items
from broker.functions.catalog import Deployed
from broker.ids import new_id
from broker.models import (
    AttemptRecord,
    Condition,
    DeadLetter,
    FunctionError,
    Invocation,
    Lease,
    Origin,
    Outcome,
    Settlement,
    State,
    Success,
    SystemFault,
)

MAPPING_BACKOFF = Backoff(initial_s=0.5, multiplier=2.0, max_s=60.0, jitter=0.1)
"""Delay before the n-th retry of a batch in place: 0.5 s doubling up to a minute."""

_CONDITIONS = {
    MappingCondition.RETRY_ATTEMPTS_EXHAUSTED: Condition.RETRIES_EXHAUSTED,
    MappingCondition.RECORD_AGE_EXCEEDED: Condition.EVENT_AGE_EXCEEDED,
    MappingCondition.MAXIMUM_PAYLOAD_SIZE_EXCEEDED: Condition.RETRIES_EXHAUSTED,
    MappingCondition.INVALID_S3_NOTIFICATION: Condition.RETRIES_EXHAUSTED,
}


@dataclass(frozen=True, slots=True)
class MappingPolicy:
    """A mapping's failure handling, as its invocations carry it."""

    name: str
    max_retry_attempts: int = -1
    max_record_age_s: float | None = None
    bisect_on_error: bool = False
    report_batch_item_failures: bool = False
    on_failure: str | None = None
    oldest_record_ms: int | None = None
    """When the batch's oldest record was written (the age limit counts from it)."""
    redelivered_by_source: bool = False
    """The source gives failed records again by itself (an SQS queue): one attempt."""

    def to_json(self) -> dict[str, Any]:
        extra = {"redelivered_by_source": True} if self.redelivered_by_source else {}
        return extra | {
            "name": self.name,
            "max_retry_attempts": self.max_retry_attempts,
            "max_record_age_s": self.max_record_age_s,
            "bisect_on_error": self.bisect_on_error,
            "report_batch_item_failures": self.report_batch_item_failures,
            "on_failure": self.on_failure,
            "oldest_record_ms": self.oldest_record_ms,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> MappingPolicy:
        return cls(
            name=str(data.get("name", "")),
            max_retry_attempts=int(data.get("max_retry_attempts", -1)),
            max_record_age_s=data.get("max_record_age_s"),
            bisect_on_error=bool(data.get("bisect_on_error", False)),
            report_batch_item_failures=bool(data.get("report_batch_item_failures", False)),
            on_failure=data.get("on_failure"),
            oldest_record_ms=data.get("oldest_record_ms"),
            redelivered_by_source=bool(data.get("redelivered_by_source", False)),
        )


def mapping_source(
    policy: MappingPolicy,
    position: Mapping[str, Any],
    *,
    records: int,
    oversized: int | None = None,
) -> dict[str, Any]:
    """The ``source`` a poller gives a batch's invocation of ``records`` records;
    ``oversized``: the size in bytes of a one-record event over the payload limit (it is
    never run)."""
    source: dict[str, Any] = {
        "mapping": policy.to_json(),
        "position": dict(position),
        "records": records,
    }
    if oversized is not None:
        source["oversized"] = oversized
    return source


def is_mapping_batch(inv: Invocation) -> bool:
    return inv.origin is Origin.MAPPING and isinstance(inv.source.get("mapping"), Mapping)


def policy_of(inv: Invocation) -> MappingPolicy:
    return MappingPolicy.from_json(inv.source["mapping"])


def not_to_run(inv: Invocation, now: datetime) -> MappingCondition | None:
    """Why a mapping's batch is given up on without running it, if it is: a record over
    the payload limit, or records older than the mapping's ``max_record_age``."""
    if "oversized" in inv.source:
        return MappingCondition.MAXIMUM_PAYLOAD_SIZE_EXCEEDED
    if _too_old(inv, now):
        return MappingCondition.RECORD_AGE_EXCEEDED
    return None


def _too_old(inv: Invocation, now: datetime) -> bool:
    """The batch's oldest record is older than the mapping's ``max_record_age``."""
    policy = policy_of(inv)
    if policy.max_record_age_s is None:
        return False
    oldest_ms = policy.oldest_record_ms
    if oldest_ms is None:
        oldest = inv.first_enqueued_at
    else:
        oldest = datetime.fromtimestamp(oldest_ms / 1000, now.tzinfo)
    return (now - oldest).total_seconds() > policy.max_record_age_s


@dataclass(slots=True)
class _Progress:
    """Where a batch's retries stand; kept in the invocation's ``source``."""

    source: dict[str, Any]
    tries: int
    rest: list[Any]
    dropped: int
    function_errors: int
    system_errors: int
    follow_ons: FollowOns
    piece_records: int
    """Records in the piece that runs next (or ran, when none is left)."""
    condition: MappingCondition | None = None
    letters: list[DeadLetter] = field(default_factory=list)
    dropped_records: int = 0
    on_failure_records: int = 0


def _decode(payload: bytes) -> dict[str, Any] | None:
    try:
        value = json.loads(payload)
    except (ValueError, RecursionError):
        return None
    return value if isinstance(value, dict) else None


def _size(event: Mapping[str, Any] | None) -> int:
    """How many records ``event`` holds; 0 when it is not a batch event."""
    try:
        return len(event_items(event)) if event else 0
    except (ValueError, KeyError, TypeError):
        return 0


def _records_of(inv: Invocation) -> int:
    """Records in the piece ``inv`` runs: as the poller (or the last settle) wrote it, else
    counted in its payload."""
    records = inv.source.get("records")
    return records if isinstance(records, int) else _size(_decode(inv.payload))


def _splittable(event: dict[str, Any] | None) -> bool:
    try:
        return event is not None and len(event_items(event)) >= 2
    except ValueError:
        return False


def settle_mapping_attempt(
    lease: Lease,
    outcome: Outcome | None,
    function: Deployed,
    started_at: datetime,
    duration_ms: float,
    now: datetime,
    rng: random.Random | None = None,
) -> tuple[Settlement, Decision]:
    """The settlement of one attempt of a mapping's batch; ``outcome`` None: too old to run."""
    inv = lease.invocation
    policy = policy_of(inv)
    progress = _Progress(
        source=dict(inv.source),
        tries=int(inv.source.get("tries", 0)),
        rest=list(inv.source.get("rest", [])),
        dropped=int(inv.source.get("dropped", 0)),
        function_errors=inv.function_errors,
        system_errors=inv.system_errors,
        follow_ons=FollowOns(invocation_id=inv.id, function=inv.function),
        piece_records=_records_of(inv),
    )
    ran = progress.piece_records
    invoked = ran if isinstance(outcome, Success | FunctionError) else 0
    failed = ran if isinstance(outcome, SystemFault) else 0
    status = attempt_status(outcome)
    error: FunctionError | SystemFault | None = (
        outcome if isinstance(outcome, FunctionError | SystemFault) else None
    )
    error_type = error.error_type if error else None
    error_message = error.message if error else None
    next_payload: bytes | None = None
    retry_at: datetime | None = None

    if policy.redelivered_by_source and not isinstance(outcome, SystemFault):
        return _settle_once(lease, progress, policy, outcome, started_at, duration_ms, now)
    if outcome is None:
        condition = not_to_run(inv, now) or MappingCondition.RECORD_AGE_EXCEEDED
        error_type, error_message = condition.value, _never_ran(inv, condition)
        next_payload = _give_up(
            progress, inv, function, policy, _decode(inv.payload), condition, None, now
        )
    elif isinstance(outcome, SystemFault):
        # The function could not run: retried on the system backoff, not an attempt.
        progress.system_errors += 1
        retry_at = now + timedelta(
            seconds=backoff_delay(progress.system_errors, SYSTEM_BACKOFF, rng)
        )
    else:
        failed_event, whole, reason = _failed_part(policy, inv.payload, outcome)
        if failed_event is None:
            next_payload = _next_piece(progress)
        else:
            if isinstance(outcome, Success):
                status = "partial" if not whole else "error"
                error_type, error_message = "BatchItemFailures", reason
            failed = _size(failed_event) or ran
            progress.function_errors += 1
            progress.tries += 1
            if policy.max_record_age_s is not None and _too_old(inv, now):
                next_payload = _give_up(
                    progress, inv, function, policy, failed_event,
                    MappingCondition.RECORD_AGE_EXCEEDED, outcome, now,
                )  # fmt: skip
            elif whole and policy.bisect_on_error and _splittable(failed_event):
                first, second = bisect_event(failed_event)
                progress.rest.insert(0, second)
                progress.tries = 0
                progress.piece_records = _size(first)
                next_payload = encode_event(first)
            elif 0 <= policy.max_retry_attempts < progress.tries:
                next_payload = _give_up(
                    progress, inv, function, policy, failed_event,
                    MappingCondition.RETRY_ATTEMPTS_EXHAUSTED, outcome, now,
                )  # fmt: skip
            else:
                if not whole:
                    progress.piece_records = failed
                    next_payload = encode_event(failed_event)
                retry_at = now + timedelta(
                    seconds=backoff_delay(progress.tries, MAPPING_BACKOFF, rng)
                )
    counts = RecordCounts(invoked, failed, progress.dropped_records, progress.on_failure_records)
    return _settlement(
        lease, progress, status, started_at, duration_ms, now, outcome,
        next_payload, retry_at, error_type, error_message, counts,
    )  # fmt: skip


def _settle_once(
    lease: Lease,
    progress: _Progress,
    policy: MappingPolicy,
    outcome: Outcome | None,
    started_at: datetime,
    duration_ms: float,
    now: datetime,
) -> tuple[Settlement, Decision]:
    """An attempt of a batch its source redelivers: succeeded, partial (still
    ``succeeded``, its response the result) or failed; nothing retried, nothing
    dead-lettered."""
    inv = lease.invocation
    error_type: str | None = None
    error_message: str | None = None
    status = attempt_status(outcome)
    ran = progress.piece_records
    # Records the queue gives again are failed here, never dropped: the queue's own
    # redrive policy decides when they are.
    counts = RecordCounts(invoked=ran if outcome is not None else 0)
    if outcome is None:
        condition = not_to_run(inv, now) or MappingCondition.RECORD_AGE_EXCEEDED
        error_type, error_message = condition.value, _never_ran(inv, condition)
        progress.dropped = 1
    elif isinstance(outcome, FunctionError):
        error_type, error_message = outcome.error_type, outcome.message
        progress.function_errors += 1
        progress.dropped = 1
        counts = replace(counts, failed=ran)
    else:
        failed_event, whole, reason = _failed_part(policy, inv.payload, outcome)
        if failed_event is not None:
            status = "error" if whole else "partial"
            error_type, error_message = "BatchItemFailures", reason
            progress.function_errors += 1
            progress.dropped = 1 if whole else 0
            counts = replace(counts, failed=_size(failed_event) or ran)
    progress.condition = MappingCondition.RETRY_ATTEMPTS_EXHAUSTED
    return _settlement(
        lease, progress, status, started_at, duration_ms, now, outcome,
        None, None, error_type, error_message, counts,
    )  # fmt: skip


def _failed_part(
    policy: MappingPolicy, payload: bytes, outcome: Outcome
) -> tuple[dict[str, Any] | None, bool, str]:
    """The records to retry (None: all succeeded), whether that is the whole batch, and why.

    The batch's payload is decoded only when its records are needed: a success
    without ``report_batch_item_failures`` (the common case) leaves it alone."""
    if isinstance(outcome, FunctionError):
        return _decode(payload) or {}, True, ""
    assert isinstance(outcome, Success)
    if not policy.report_batch_item_failures:
        return None, False, ""
    event = _decode(payload)
    if event is None:
        return None, False, ""
    response = parse_batch_response(event, outcome.payload)
    if response.outcome is BatchOutcome.SUCCESS:
        return None, False, ""
    if response.outcome is BatchOutcome.FAILURE:
        return event, True, response.reason
    assert response.retry_event is not None
    failed = len(event_items(response.retry_event))
    return response.retry_event, False, f"{failed} records reported as failed"


def _never_ran(inv: Invocation, condition: MappingCondition) -> str:
    if condition is MappingCondition.MAXIMUM_PAYLOAD_SIZE_EXCEEDED:
        position = inv.source.get("position", {})
        return (
            f"record {position.get('first', '?')} of {position.get('partition', '?')} is "
            f"{inv.source['oversized']} bytes as an event, over the payload limit; "
            "it was not invoked"
        )
    return "the batch's records are older than max_record_age; they were not invoked"


def _next_piece(progress: _Progress) -> bytes | None:
    """The next piece's payload (its retries start afresh), or None when none is left."""
    if not progress.rest:
        return None
    progress.tries = 0
    piece = progress.rest.pop(0)
    progress.piece_records = _size(piece)
    return encode_event(piece)


def _give_up(
    progress: _Progress,
    inv: Invocation,
    function: Deployed,
    policy: MappingPolicy,
    event: dict[str, Any] | None,
    condition: MappingCondition,
    outcome: Outcome | None,
    now: datetime,
) -> bytes | None:
    """Send the piece to the DLQ and its failure record to ``on_failure``; the next piece."""
    progress.dropped += 1
    progress.condition = condition
    payload = encode_event(event) if event else inv.payload
    given_up = _size(event) or progress.piece_records
    progress.dropped_records += given_up
    if event:
        try:
            record = mapping_failure_record(
                event,
                condition=condition,
                function_arn=function.arn,
                request_id=inv.request_id,
                approximate_invoke_count=(
                    0
                    if condition is MappingCondition.MAXIMUM_PAYLOAD_SIZE_EXCEEDED
                    else max(progress.tries, 1)
                ),
                now=now,
                outcome=outcome,
                # Not the record itself: it is too large to deliver (the DLQ keeps it).
                include_payload=(
                    False if condition is MappingCondition.MAXIMUM_PAYLOAD_SIZE_EXCEEDED else None
                ),
            )
        except (ValueError, KeyError):
            record = None
        if record is not None and policy.on_failure:
            planned = len(progress.follow_ons.enqueue)
            parse_destination(policy.on_failure).plan(record, progress.follow_ons)
            progress.on_failure_records += given_up
            # One record per piece given up on, even when a batch gives up on several.
            progress.follow_ons.enqueue[planned:] = [
                replace(item, idempotency_key=f"destination:{inv.id}:{progress.dropped}")
                for item in progress.follow_ons.enqueue[planned:]
            ]
    error = outcome if isinstance(outcome, FunctionError | SystemFault) else None
    progress.letters.append(
        DeadLetter(
            id=new_id(),
            invocation_id=inv.id,
            request_id=inv.request_id,
            function=inv.function,
            payload=payload,
            origin=inv.origin,
            condition=_CONDITIONS[condition],
            error_type=error.error_type if error else condition.value,
            error_message=error.message if error else _never_ran(inv, condition),
            attempts=max(progress.tries, 1),
            first_enqueued_at=inv.first_enqueued_at,
            dead_at=now,
            source=inv.source,
        )
    )
    return _next_piece(progress)


def _settlement(
    lease: Lease,
    progress: _Progress,
    status: str,
    started_at: datetime,
    duration_ms: float,
    now: datetime,
    outcome: Outcome | None,
    next_payload: bytes | None,
    retry_at: datetime | None,
    error_type: str | None,
    error_message: str | None,
    counts: RecordCounts,
) -> tuple[Settlement, Decision]:
    inv = lease.invocation
    more = next_payload is not None or retry_at is not None
    source: dict[str, Any] | None = None
    condition: Condition | None = None
    if more:
        state = State.PENDING
        retry_at = retry_at or now
        source = {
            **progress.source,
            "records": progress.piece_records,
            "tries": progress.tries,
            "rest": progress.rest,
            "dropped": progress.dropped,
        }
    elif progress.dropped:
        state = State.FAILED
        condition = _CONDITIONS[progress.condition or MappingCondition.RETRY_ATTEMPTS_EXHAUSTED]
    else:
        state, condition = State.SUCCEEDED, Condition.SUCCESS
    attempt = AttemptRecord(
        number=inv.attempts,
        started_at=started_at,
        duration_ms=duration_ms,
        status=status,
        error_type=error_type,
        error_message=error_message,
        error_trace=outcome.trace if isinstance(outcome, FunctionError) else (),
    )
    # One dead letter per settlement: a settlement gives up on at most one piece.
    letter = progress.letters[0] if progress.letters else None
    settlement = Settlement(
        lease_token=lease.token,
        invocation_id=inv.id,
        state=state,
        attempt=attempt,
        retry_at=retry_at,
        function_errors=progress.function_errors,
        system_errors=progress.system_errors,
        result=outcome.payload if isinstance(outcome, Success) else None,
        error_type=error_type if state is not State.SUCCEEDED else None,
        error_message=error_message if state is not State.SUCCEEDED else None,
        enqueue=tuple(progress.follow_ons.enqueue),
        dead_letter=letter,
        payload=next_payload if state is State.PENDING else None,
        source=source,
    )
    decision = Decision(
        state, progress.function_errors, progress.system_errors, retry_at, condition, counts
    )
    return settlement, decision
