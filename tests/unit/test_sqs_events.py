"""Lambda's SQS event from received messages, and what an outcome keeps in the queue."""

from __future__ import annotations

import json
from typing import Any

import pytest

from broker.events.batch_results import BatchOutcome, parse_batch_response
from broker.events.batches import event_items, event_kind
from broker.events.sqs import sqs_event
from broker.functions.invoking import Finished
from broker.models import NewInvocation, Origin, State
from pollers.sqs.inflight import Followed, kept

ARN = "arn:aws:sqs:eu-west-1:123456789012:jobs.fifo"


def message(n: int, group: str | None = None) -> dict[str, Any]:
    attributes = {
        "SenderId": "AIDAEXAMPLE",
        "ApproximateFirstReceiveTimestamp": "1700000000100",
        "ApproximateReceiveCount": "1",
        "SentTimestamp": "1700000000000",
    }
    if group is not None:
        attributes |= {
            "MessageGroupId": group,
            "MessageDeduplicationId": f"d{n}",
            "SequenceNumber": f"1800000000000000000{n}",
        }
    return {
        "MessageId": f"m{n}",
        "ReceiptHandle": f"h{n}",
        "MD5OfBody": "0" * 32,
        "Body": json.dumps({"n": n}),
        "Attributes": attributes,
        "MessageAttributes": {"tags": {"DataType": "String", "StringListValues": ["a"]}},
    }


def test_records_carry_lambdas_fields_in_lambdas_order() -> None:
    event = sqs_event([message(1, "g")], event_source_arn=ARN, region="eu-west-1")
    [record] = event["Records"]
    assert list(record) == [
        "messageId", "receiptHandle", "body", "attributes", "messageAttributes", "md5OfBody",
        "eventSource", "eventSourceARN", "awsRegion",
    ]  # fmt: skip
    assert list(record["attributes"]) == [
        "ApproximateReceiveCount", "SentTimestamp", "SenderId",
        "ApproximateFirstReceiveTimestamp", "SequenceNumber", "MessageGroupId",
        "MessageDeduplicationId",
    ]  # fmt: skip
    assert record["messageAttributes"] == {
        "tags": {"stringListValues": ["a"], "binaryListValues": [], "dataType": "String"}
    }
    assert event_kind(event) == "sqs"
    assert [group for group, _ in event_items(event)] == ["g"]


def test_a_fifo_failure_keeps_the_rest_of_its_group_only() -> None:
    messages = [message(1, "a"), message(2, "b"), message(3, "a"), message(4, "b")]
    event = sqs_event(messages, event_source_arn=ARN, region="eu-west-1")
    response = {"batchItemFailures": [{"itemIdentifier": "m1"}]}
    parsed = parse_batch_response(event, response)
    assert parsed.outcome is BatchOutcome.PARTIAL
    assert parsed.retry_event is not None
    assert [r["messageId"] for r in parsed.retry_event["Records"]] == ["m1", "m3"]


def test_a_standard_queue_keeps_exactly_the_reported_messages() -> None:
    event = sqs_event([message(n) for n in range(4)], event_source_arn=ARN, region="r")
    parsed = parse_batch_response(event, {"batchItemFailures": [{"itemIdentifier": "m1"}]})
    assert parsed.retry_event is not None
    assert [r["messageId"] for r in parsed.retry_event["Records"]] == ["m1"]


def followed(ids: list[str], groups: list[str] | None = None) -> Followed:
    new = NewInvocation(id="i", function="f", payload=b"{}", origin=Origin.MAPPING)
    return Followed("i", ids, groups or [""] * len(ids), new)


def finished(state: State, result: Any = None) -> Finished:
    payload = json.dumps(result).encode() if result is not None else None
    return Finished("i", state, payload, None, None)


M1_FAILED = {"batchItemFailures": [{"itemIdentifier": "m1"}]}


@pytest.mark.parametrize(
    ("outcome", "report", "expected"),
    [
        (finished(State.SUCCEEDED), False, []),
        (finished(State.FAILED), False, ["m0", "m1", "m2"]),
        (finished(State.SUCCEEDED, M1_FAILED), True, ["m1"]),
        # Without ReportBatchItemFailures a response is not read: all succeeded.
        (finished(State.SUCCEEDED, M1_FAILED), False, []),
        # An identifier not in the batch fails it whole, as in Lambda.
        (finished(State.SUCCEEDED, {"batchItemFailures": [{"itemIdentifier": "x"}]}), True,
         ["m0", "m1", "m2"]),
        (finished(State.SUCCEEDED, {"batchItemFailures": []}), True, []),
    ],
)  # fmt: skip
def test_what_an_outcome_keeps(outcome: Finished, report: bool, expected: list[str]) -> None:
    assert kept(followed(["m0", "m1", "m2"]), outcome, report) == expected


def test_a_fifo_outcome_keeps_the_failed_message_and_its_group_after_it() -> None:
    batch = followed(["m0", "m1", "m2", "m3"], ["a", "b", "a", "b"])
    response = {"batchItemFailures": [{"itemIdentifier": "m0"}]}
    assert kept(batch, finished(State.SUCCEEDED, response), True) == ["m0", "m2"]
