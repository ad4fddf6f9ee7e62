"""SQS queues and SNS topics by name: what a config says, and what the API needs.

A queue is named by its URL with the ``sqs://`` scheme
(``sqs://sqs.eu-west-1.amazonaws.com/123456789012/orders``), by its ARN
(``arn:aws:sqs:eu-west-1:123456789012:orders``) or, for destinations, by its bare name
(resolved with ``GetQueueUrl``). A topic is named by its ARN, as ``sns://ARN`` or bare.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import urlsplit

_AWS_HOST = re.compile(r"^sqs[.-](?P<region>[a-z0-9-]+)\.amazonaws\.com(?:\.cn)?$")
_QUEUE_NAME = re.compile(r"^[A-Za-z0-9_-]{1,80}(?:\.fifo)?$")
_ACCOUNT = re.compile(r"^\d{12}$")
_TOPIC_ARN = re.compile(
    r"^arn:(?P<partition>aws[a-z-]*):sns:(?P<region>[a-z0-9-]+):(?P<account>\d{12}):"
    r"(?P<name>[A-Za-z0-9_-]{1,256}(?:\.fifo)?)$"
)
EXPECTED_QUEUE = (
    "expected sqs://HOST/ACCOUNT/QUEUE (the queue URL with the sqs:// scheme) "
    "or arn:aws:sqs:REGION:ACCOUNT:QUEUE"
)
EXPECTED_TOPIC = "expected sns://arn:aws:sns:REGION:ACCOUNT:TOPIC or the topic ARN"


@dataclass(frozen=True, slots=True)
class Queue:
    """An SQS queue. ``host`` is None when only the ARN or the name is known: the client's
    endpoint then says where the queue lives. ``region`` and ``account`` are None when the
    name does not say them."""

    name: str
    account: str | None = None
    region: str | None = None
    host: str | None = None
    partition: str = "aws"

    @property
    def fifo(self) -> bool:
        return self.name.endswith(".fifo")

    def url(self, endpoint: str | None = None) -> str | None:
        """The queue URL the API takes, or None when it must be looked up by name.

        ``endpoint`` is the client's endpoint (its scheme is used for the URL, and its
        host when the queue was named by ARN)."""
        if self.account is None:
            return None
        scheme = "https"
        host = self.host
        if endpoint:
            parts = urlsplit(endpoint)
            scheme = parts.scheme or scheme
            host = host or parts.netloc
        if host is None:
            region = self.region or "us-east-1"
            host = f"sqs.{region}.amazonaws.com"
        return f"{scheme}://{host}/{self.account}/{self.name}"

    def arn(self, region: str, account: str | None = None) -> str:
        """``arn:aws:sqs:REGION:ACCOUNT:NAME``: Lambda's ``eventSourceARN``."""
        return (
            f"arn:{self.partition}:sqs:{self.region or region}:"
            f"{self.account or account or '000000000000'}:{self.name}"
        )


def parse_queue(text: str, *, allow_name: bool = False) -> Queue:
    """The queue ``text`` names; ``ValueError`` saying what is wrong and what was expected."""
    if text.startswith("arn:"):
        return _queue_arn(text)
    if text.startswith("sqs://"):
        return _queue_url(text)
    if allow_name and _QUEUE_NAME.match(text):
        return Queue(text)
    raise ValueError(f"{text!r} is not an SQS queue; {EXPECTED_QUEUE}")


def _queue_arn(text: str) -> Queue:
    parts = text.split(":")
    if len(parts) != 6 or parts[2] != "sqs" or not parts[1].startswith("aws"):
        raise ValueError(f"{text!r} is not an SQS queue ARN; {EXPECTED_QUEUE}")
    _, partition, _, region, account, name = parts
    if not region:
        raise ValueError(f"{text!r} names no region; {EXPECTED_QUEUE}")
    _check(text, account, name)
    return Queue(name, account, region, None, partition)


def _queue_url(text: str) -> Queue:
    parts = urlsplit(text)
    if parts.query or parts.fragment:
        raise ValueError(f"{text!r}: an SQS queue URL takes no ?options; {EXPECTED_QUEUE}")
    path = parts.path.strip("/").split("/")
    if not parts.netloc or len(path) != 2:
        raise ValueError(f"{text!r} names no queue; {EXPECTED_QUEUE}")
    account, name = path
    _check(text, account, name)
    match = _AWS_HOST.match(parts.hostname or "")
    region = match.group("region") if match else None
    return Queue(name, account, region, parts.netloc)


def _check(text: str, account: str, name: str) -> None:
    if not _ACCOUNT.match(account):
        raise ValueError(f"{text!r}: account {account!r} is not 12 digits; {EXPECTED_QUEUE}")
    if not _QUEUE_NAME.match(name):
        raise ValueError(
            f"{text!r}: queue name {name!r} is not 1-80 letters, digits, '-' or '_' "
            f"(with '.fifo' for a FIFO queue)"
        )


@dataclass(frozen=True, slots=True)
class Topic:
    """An SNS topic, by its ARN."""

    arn: str
    region: str
    name: str

    @property
    def fifo(self) -> bool:
        return self.name.endswith(".fifo")


def parse_topic(text: str) -> Topic:
    """The topic ``text`` names (``sns://ARN`` or the ARN); ``ValueError`` if it is not one."""
    arn = text.removeprefix("sns://")
    match = _TOPIC_ARN.match(arn)
    if match is None:
        raise ValueError(f"{text!r} is not an SNS topic; {EXPECTED_TOPIC}")
    return Topic(arn, match.group("region"), match.group("name"))
