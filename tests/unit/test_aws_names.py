"""SQS queues and SNS topics as the config names them."""

from __future__ import annotations

import pytest

from broker.aws.names import Queue, parse_queue, parse_topic


def test_an_aws_queue_url_says_its_region_account_and_name() -> None:
    queue = parse_queue("sqs://sqs.eu-west-1.amazonaws.com/123456789012/orders")
    assert queue == Queue("orders", "123456789012", "eu-west-1", "sqs.eu-west-1.amazonaws.com")
    assert queue.url() == "https://sqs.eu-west-1.amazonaws.com/123456789012/orders"
    assert queue.arn("us-east-1") == "arn:aws:sqs:eu-west-1:123456789012:orders"


def test_a_local_queue_url_takes_the_scheme_of_the_endpoint() -> None:
    queue = parse_queue("sqs://localhost:9324/000000000000/orders.fifo")
    assert queue.fifo and queue.region is None
    assert queue.url("http://localhost:9324") == "http://localhost:9324/000000000000/orders.fifo"
    assert queue.arn("eu-west-1") == "arn:aws:sqs:eu-west-1:000000000000:orders.fifo"


def test_an_arn_leaves_the_host_to_the_endpoint() -> None:
    queue = parse_queue("arn:aws:sqs:eu-west-1:123456789012:orders")
    assert queue.url() == "https://sqs.eu-west-1.amazonaws.com/123456789012/orders"
    assert queue.url("http://127.0.0.1:5000") == "http://127.0.0.1:5000/123456789012/orders"


def test_a_bare_name_must_be_looked_up() -> None:
    assert parse_queue("orders", allow_name=True).url() is None
    with pytest.raises(ValueError, match="not an SQS queue"):
        parse_queue("orders")


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("sqs://host/orders", "names no queue"),
        ("sqs://host/12345/orders", "not 12 digits"),
        ("sqs://host/123456789012/bad name", "queue name"),
        ("sqs://host/123456789012/orders?x=1", "takes no"),
        ("arn:aws:sns:eu-west-1:123456789012:orders", "not an SQS queue ARN"),
        ("arn:aws:sqs::123456789012:orders", "names no region"),
        ("https://host/123456789012/orders", "not an SQS queue"),
    ],
)
def test_a_wrong_queue_says_what_was_expected(text: str, says: str) -> None:
    with pytest.raises(ValueError, match=says) as raised:
        parse_queue(text)
    assert "expected" in str(raised.value) or "queue name" in says


def test_a_topic_is_named_by_its_arn() -> None:
    topic = parse_topic("sns://arn:aws:sns:eu-west-1:123456789012:failures")
    assert (topic.region, topic.name, topic.fifo) == ("eu-west-1", "failures", False)
    assert parse_topic("arn:aws:sns:eu-west-1:123456789012:f.fifo").fifo
    with pytest.raises(ValueError, match="expected sns://"):
        parse_topic("sns://failures")
