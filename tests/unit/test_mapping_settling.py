"""A mapping's batch after an attempt: retried in place, reduced, bisected, or given up on."""

from __future__ import annotations

import json
from dataclasses import astuple
from datetime import UTC, datetime, timedelta
from typing import Any

from broker.config.models import FunctionConfig
from broker.dispatch.mapping_batches import (
    MappingPolicy,
    mapping_source,
    not_to_run,
    settle_mapping_attempt,
)
from broker.dispatch.retry import RecordCounts
from broker.events.batches import KafkaRecord, encode_event, event_items, kafka_event
from broker.functions.catalog import Deployed
from broker.models import (
    FunctionError,
    FunctionLimits,
    Invocation,
    Lease,
    Origin,
    Outcome,
    Settlement,
    State,
    Success,
    SystemFault,
)

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
BOOM = FunctionError("ValueError", "boom")


class _NoInvoker:
    async def start(self) -> None: ...
    async def invoke(self, request: Any) -> Outcome:
        raise AssertionError("not invoked in these tests")

    async def close(self) -> None: ...


FUNCTION = Deployed(
    name="f",
    config=FunctionConfig(handler="x:y"),
    invoker=_NoInvoker(),
    arn="arn:aws:lambda:local:000000000000:function:f",
    limits=FunctionLimits(lease_s=10),
    on_success=None,
    on_failure=None,
)


def batch(offsets: range) -> dict[str, Any]:
    records = [KafkaRecord("t", 0, o, 1_772_366_400_000, value=b"{}") for o in offsets]
    return kafka_event(records, bootstrap_servers="b:9092")


def offsets(payload: bytes | dict[str, Any]) -> list[int]:
    event = json.loads(payload) if isinstance(payload, bytes) else payload
    return [int(record["offset"]) for _, record in event_items(event)]


def lease_of(
    event: dict[str, Any], policy: MappingPolicy, source: dict[str, Any] | None = None, **kw: Any
) -> Lease:
    inv = Invocation(
        id="inv-1",
        request_id="req-1",
        function="f",
        payload=encode_event(event),
        origin=Origin.MAPPING,
        lane="mapping:m:t-0",
        idempotency_key="k",
        sync=False,
        state=State.RUNNING,
        attempts=kw.get("attempts", 1),
        function_errors=kw.get("function_errors", 0),
        system_errors=0,
        first_enqueued_at=NOW,
        available_at=NOW,
        source=source
        or mapping_source(policy, {"partition": "t-0"}, records=len(event_items(event))),
    )
    return Lease("tok", inv, NOW + timedelta(seconds=10))


def settle(lease: Lease, outcome: Outcome | None, now: datetime = NOW) -> Settlement:
    settlement, _ = settle_mapping_attempt(lease, outcome, FUNCTION, now, 1.0, now)
    return settlement


def follow(lease: Lease, s: Settlement) -> Lease:
    """The lease of the next attempt, as the queue would give it."""
    inv = lease.invocation
    return Lease(
        "tok",
        Invocation(
            **{
                **{f: getattr(inv, f) for f in inv.__dataclass_fields__},
                "payload": s.payload if s.payload is not None else inv.payload,
                "source": s.source if s.source is not None else inv.source,
                "attempts": inv.attempts + 1,
                "function_errors": s.function_errors,
            }
        ),
        lease.expires_at,
    )


def test_success_finishes_the_batch() -> None:
    s = settle(lease_of(batch(range(4)), MappingPolicy("m")), Success(b"null"))
    assert s.state is State.SUCCEEDED and s.dead_letter is None


def test_failure_retries_the_whole_batch_in_place_and_keeps_its_payload() -> None:
    s = settle(lease_of(batch(range(4)), MappingPolicy("m")), BOOM)
    assert s.state is State.PENDING
    assert s.payload is None  # the same records again
    assert s.retry_at is not None and s.retry_at > NOW
    assert s.source is not None and s.source["tries"] == 1


def test_retries_run_out_after_max_retry_attempts_and_the_lane_moves_on() -> None:
    policy = MappingPolicy("m", max_retry_attempts=2, on_failure="function:audit")
    lease = lease_of(batch(range(3)), policy)
    states = []
    for _ in range(3):
        s = settle(lease, BOOM)
        states.append(s.state)
        lease = follow(lease, s)
    assert states == [State.PENDING, State.PENDING, State.FAILED]
    assert s.dead_letter is not None and offsets(s.dead_letter.payload) == [0, 1, 2]
    [record] = s.enqueue
    assert record.function == "audit"
    body = json.loads(record.payload)
    assert body["requestContext"]["condition"] == "RetryAttemptsExhausted"
    assert body["KafkaBatchInfo"]["recordsInfo"]["t-0"]["firstRecordOffset"] == "0"


def test_partial_response_retries_from_the_lowest_failed_record() -> None:
    policy = MappingPolicy("m", report_batch_item_failures=True)
    response = json.dumps({"batchItemFailures": [{"itemIdentifier": "t-0-2"}]}).encode()
    s = settle(lease_of(batch(range(5)), policy), Success(response))
    assert s.state is State.PENDING
    assert s.payload is not None and offsets(s.payload) == [2, 3, 4]
    assert s.attempt.status == "partial"


def test_invalid_identifier_fails_the_whole_batch() -> None:
    policy = MappingPolicy("m", report_batch_item_failures=True)
    response = json.dumps({"batchItemFailures": [{"itemIdentifier": "nope"}]}).encode()
    s = settle(lease_of(batch(range(5)), policy), Success(response))
    assert s.state is State.PENDING and s.payload is None
    assert s.error_type == "BatchItemFailures"


def test_bisect_isolates_a_poison_record_without_counting_splits() -> None:
    policy = MappingPolicy("m", bisect_on_error=True, max_retry_attempts=0)
    lease = lease_of(batch(range(4)), policy)
    runs: list[list[int]] = []
    dropped: list[list[int]] = []
    for _ in range(20):
        ran = offsets(lease.invocation.payload)
        runs.append(ran)
        s = settle(lease, BOOM if 2 in ran else Success(b"null"))
        if s.dead_letter is not None:
            dropped.append(offsets(s.dead_letter.payload))
        if s.state is not State.PENDING:
            break
        lease = follow(lease, s)
    assert runs == [[0, 1, 2, 3], [0, 1], [2, 3], [2], [3]]
    assert dropped == [[2]]
    assert s.state is State.FAILED


def test_record_age_limits_retries_and_expired_batches_are_not_run() -> None:
    old_ms = int((NOW - timedelta(hours=2)).timestamp() * 1000)
    policy = MappingPolicy("m", max_record_age_s=3600, oldest_record_ms=old_ms)
    lease = lease_of(batch(range(2)), policy)
    assert not_to_run(lease.invocation, NOW) is not None
    s = settle(lease, None)
    assert s.state is State.FAILED
    assert s.dead_letter is not None and s.dead_letter.condition.value == "EventAgeExceeded"
    fresh = MappingPolicy("m", max_record_age_s=3600, oldest_record_ms=old_ms + 3_600_000)
    assert not_to_run(lease_of(batch(range(2)), fresh).invocation, NOW) is None


def test_a_record_over_the_payload_limit_is_given_up_without_running() -> None:
    policy = MappingPolicy("m", on_failure="function:sink")
    source = mapping_source(
        policy, {"partition": "t-0", "first": "7", "last": "7"}, records=1, oversized=300_000
    )
    lease = lease_of(batch(range(7, 8)), policy, source)
    assert not_to_run(lease.invocation, NOW) is not None  # the dispatcher does not run it
    s = settle(lease, None)
    assert s.state is State.FAILED
    assert s.dead_letter is not None and offsets(s.dead_letter.payload) == [7]
    assert s.dead_letter.error_type == "MaximumPayloadSizeExceeded"
    assert s.dead_letter.error_message == (
        "record 7 of t-0 is 300000 bytes as an event, over the payload limit; it was not invoked"
    )
    [record] = [json.loads(item.payload) for item in s.enqueue]
    assert record["requestContext"]["condition"] == "MaximumPayloadSizeExceeded"
    assert record["requestContext"]["approximateInvokeCount"] == 0
    assert record["KafkaBatchInfo"]["recordsInfo"]["t-0"]["firstRecordOffset"] == "7"


def test_system_fault_is_retried_without_using_an_attempt() -> None:
    policy = MappingPolicy("m", max_retry_attempts=0)
    s = settle(lease_of(batch(range(2)), policy), SystemFault("Runtime.Unavailable", "down"))
    assert s.state is State.PENDING and s.function_errors == 0
    assert s.source is not None and s.source.get("tries", 0) == 0


def counts_of(lease: Lease, outcome: Outcome | None) -> tuple[Settlement, RecordCounts]:
    settlement, decision = settle_mapping_attempt(lease, outcome, FUNCTION, NOW, 1.0, NOW)
    assert decision.records is not None
    return settlement, decision.records


def test_each_attempt_counts_the_records_it_invoked_failed_dropped_and_sent_on() -> None:
    """Lambda's InvokedEventCount, FailedInvokeEventCount, DroppedEventCount and
    OnFailureDestinationDeliveredEventCount, summed over a bisected batch's attempts."""
    policy = MappingPolicy("m", bisect_on_error=True, max_retry_attempts=0, on_failure="function:a")
    lease = lease_of(batch(range(4)), policy)
    total = RecordCounts()
    for _ in range(20):
        ran = offsets(lease.invocation.payload)
        s, counts = counts_of(lease, BOOM if 2 in ran else Success(b"null"))
        assert counts.invoked == len(ran)
        total = RecordCounts(*(a + b for a, b in zip(astuple(total), astuple(counts), strict=True)))
        if s.state is not State.PENDING:
            break
        lease = follow(lease, s)
    # runs [0-3] fails, [0,1] ok, [2,3] fails, [2] fails and is dropped, [3] ok
    assert total == RecordCounts(
        invoked=4 + 2 + 2 + 1 + 1, failed=4 + 2 + 1, dropped=1, on_failure=1
    )


def test_a_partial_response_fails_only_the_records_it_names() -> None:
    policy = MappingPolicy("m", report_batch_item_failures=True)
    response = json.dumps({"batchItemFailures": [{"itemIdentifier": "t-0-3"}]}).encode()
    s, counts = counts_of(lease_of(batch(range(5)), policy), Success(response))
    assert counts == RecordCounts(invoked=5, failed=2)
    assert s.source is not None and s.source["records"] == 2  # the retry's piece
    _, counts = counts_of(lease_of(batch(range(2)), policy), SystemFault("Throttled", "full"))
    assert counts == RecordCounts(failed=2)  # not invoked: the function could not run
    _, counts = counts_of(lease_of(batch(range(3)), MappingPolicy("m")), Success(b"null"))
    assert counts == RecordCounts(invoked=3)


def test_records_not_run_are_counted_dropped_from_their_payload() -> None:
    old_ms = int((NOW - timedelta(hours=2)).timestamp() * 1000)
    policy = MappingPolicy("m", max_record_age_s=3600, oldest_record_ms=old_ms)
    source = {"mapping": policy.to_json(), "position": {"partition": "t-0"}}  # no "records"
    _, counts = counts_of(lease_of(batch(range(3)), policy, source), None)
    assert counts == RecordCounts(dropped=3)


def test_a_response_nested_past_any_decoder_is_no_batch_response() -> None:
    policy = MappingPolicy("m", report_batch_item_failures=True)
    deep = b"[" * 200_000 + b"]" * 200_000  # past any Python's decoder
    s = settle(lease_of(batch(range(3)), policy), Success(deep))
    assert s.state is State.SUCCEEDED


def sqs_batch(n: int) -> dict[str, Any]:
    from broker.events.sqs import sqs_event

    messages = [
        {"MessageId": f"m{i}", "ReceiptHandle": "h", "Body": "{}", "Attributes": {}}
        for i in range(n)
    ]
    return sqs_event(messages, event_source_arn="arn:aws:sqs:r:123456789012:q", region="r")


SQS = MappingPolicy(name="m", report_batch_item_failures=True, redelivered_by_source=True)


def test_a_batch_its_queue_redelivers_runs_once_and_is_never_dead_lettered_here() -> None:
    s = settle(lease_of(sqs_batch(3), SQS), BOOM)
    assert s.state is State.FAILED
    assert (s.retry_at, s.dead_letter, s.payload, s.enqueue) == (None, None, None, ())
    assert s.error_type == "ValueError"


def test_a_partial_response_of_such_a_batch_succeeds_with_the_response_as_its_result() -> None:
    response = b'{"batchItemFailures": [{"itemIdentifier": "m1"}]}'
    s = settle(lease_of(sqs_batch(3), SQS), Success(response))
    assert s.state is State.SUCCEEDED
    assert (s.result, s.retry_at, s.dead_letter) == (response, None, None)
    assert s.attempt.status == "partial"


def test_a_system_fault_of_such_a_batch_is_tried_again() -> None:
    s = settle(lease_of(sqs_batch(3), SQS), SystemFault("InvokerError", "down"))
    assert s.state is State.PENDING and s.retry_at is not None
