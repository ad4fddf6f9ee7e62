"""``sqs://…``, ``sns://…`` and their ARNs — send to an SQS queue or publish to an SNS topic.

A queue is named by its URL with the ``sqs://`` scheme
(``sqs://sqs.eu-west-1.amazonaws.com/123456789012/orders``), by its ARN
(``arn:aws:sqs:eu-west-1:123456789012:orders``, or ``sqs://ARN``) or by its bare name
(``sqs://orders``, looked up once with ``GetQueueUrl`` in the client's region and account);
a topic by its ARN (``sns://arn:aws:sns:eu-west-1:123456789012:audit``, or bare).

The endpoint, region and credentials come from botocore's chain
(:mod:`broker.aws.clients`); a destination's ``endpoint_url`` and ``region`` (in
``destinations:``) override the first two. Headers become message attributes: a dead
letter's ``RequestID`` and ``ErrorMessage`` as ``String``, ``ErrorCode`` as ``Number``, as
Lambda sets them. FIFO queues and topics (``.fifo``) get the function's name as
``MessageGroupId`` and the delivery's id, the same on every retry, as
``MessageDeduplicationId``. Each delivery attempt is one request (botocore does not retry
it): a failure is retried by the destination's policy and counted. aiobotocore is imported
only when the first message is sent.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Literal

from broker.aws.names import EXPECTED_TOPIC, Queue, Topic, parse_queue, parse_topic
from broker.destinations.external import (
    DeliveryFailed,
    ExternalDestination,
    Message,
    require_module,
)

if TYPE_CHECKING:
    from broker.aws.clients import Endpoint
    from broker.config.models import DestinationConfig

_SQS_FORM = "sqs://HOST/ACCOUNT/QUEUE, sqs://QUEUE or arn:aws:sqs:REGION:ACCOUNT:QUEUE"
_NUMBER_HEADERS = frozenset({"ErrorCode"})
_MISSING_QUEUE = frozenset(
    {"AWS.SimpleQueueService.NonExistentQueue", "QueueDoesNotExist", "NonExistentQueue"}
)
_MISSING_TOPIC = frozenset({"NotFound", "NotFoundException"})


def parse(uri: str) -> ExternalDestination:
    if uri.startswith("sns://"):
        return _topic(uri)
    if uri.startswith("arn:"):
        service = [*uri.split(":"), "", ""][2]
        if service == "sns":
            return _topic(uri)
        if service != "sqs":
            raise ValueError(
                f"destination {uri!r} is not a queue or topic ARN; expected "
                "arn:aws:sqs:REGION:ACCOUNT:QUEUE or arn:aws:sns:REGION:ACCOUNT:TOPIC"
            )
    return _queue(uri)


def _queue(uri: str) -> ExternalDestination:
    rest = uri.removeprefix("sqs://")
    bare = not rest.startswith("arn:") and "/" not in rest
    try:
        queue = parse_queue(rest if rest.startswith("arn:") or bare else uri, allow_name=bare)
    except ValueError as exc:
        reason = str(exc)
        if bare:
            reason = (
                f"{rest!r} is not a queue name (1-80 letters, digits, '-' or '_', with '.fifo' "
                f"for a FIFO queue); expected {_SQS_FORM}"
            )
        raise ValueError(f"destination {uri!r}: {reason}") from None
    require_module("aiobotocore", "aws", "sqs")
    return ExternalDestination(uri, "sqs", {"queue": queue}, grouped=queue.fifo)


def _topic(uri: str) -> ExternalDestination:
    try:
        topic = parse_topic(uri)
    except ValueError:
        raise ValueError(f"destination {uri!r} is not an SNS topic; {EXPECTED_TOPIC}") from None
    require_module("aiobotocore", "aws", "sns")
    return ExternalDestination(uri, "sns", {"topic": topic}, grouped=topic.fifo)


def message_attributes(headers: Mapping[str, str]) -> dict[str, dict[str, str]]:
    """``headers`` as SQS/SNS message attributes; empty values are left out (the APIs
    refuse them)."""
    return {
        name: {"DataType": "Number" if name in _NUMBER_HEADERS else "String", "StringValue": value}
        for name, value in headers.items()
        if value
    }


def fifo_ids(message: Message) -> dict[str, str]:
    """``MessageGroupId`` and ``MessageDeduplicationId`` for a FIFO queue or topic."""
    return {
        "MessageGroupId": message.group or "eventwire",
        "MessageDeduplicationId": message.id or "eventwire",
    }


def _body(message: Message) -> str:
    try:
        return message.body.decode()
    except UnicodeDecodeError:
        raise DeliveryFailed(
            "Destination.BadPayload", "SQS and SNS messages are text; this one is not UTF-8"
        ) from None


class AwsSender:
    """One aiobotocore client per destination, opened on first use."""

    def __init__(self, destination: ExternalDestination, settings: DestinationConfig) -> None:
        from broker.aws.clients import Endpoint

        self.service: Literal["sqs", "sns"] = "sqs" if destination.kind == "sqs" else "sns"
        self.queue: Queue | None = destination.options.get("queue")
        self.topic: Topic | None = destination.options.get("topic")
        self.fifo = destination.grouped
        self.endpoint: Endpoint = Endpoint(settings.endpoint_url, settings.region)
        self.timeout_s = settings.timeout_s
        self._client: Any = None
        self._exit = contextlib.AsyncExitStack()
        self._queue_url: str | None = None
        self._lock = asyncio.Lock()

    @property
    def _named_region(self) -> str | None:
        """The region the ARN or the URL says, if it says one."""
        if self.topic is not None:
            return self.topic.region
        return self.queue.region if self.queue is not None else None

    async def _ready(self) -> Any:
        async with self._lock:
            if self._client is None:
                from broker.aws.clients import client

                self._client = await self._exit.enter_async_context(
                    client(
                        self.service,
                        self.endpoint,
                        named_region=self._named_region,
                        read_timeout=max(self.timeout_s, 1.0),
                        max_attempts=1,  # the destination's retry policy retries, counted
                    )
                )
            return self._client

    async def _url(self, sqs: Any) -> str:
        assert self.queue is not None
        if self._queue_url is None:
            url = self.queue.url(sqs.meta.endpoint_url)
            if url is None:  # a bare name: the client's region and account say where
                found = await sqs.get_queue_url(QueueName=self.queue.name)
                url = str(found["QueueUrl"])
            self._queue_url = url
        return self._queue_url

    async def send(self, message: Message) -> str:
        from botocore.exceptions import BotoCoreError, ClientError

        body = _body(message)
        attributes = message_attributes(message.headers)
        ordering = fifo_ids(message) if self.fifo else {}
        client = await self._ready()
        try:
            if self.topic is not None:
                answer = await client.publish(
                    TopicArn=self.topic.arn,
                    Message=body,
                    MessageAttributes=attributes,
                    **ordering,
                )
            else:
                answer = await client.send_message(
                    QueueUrl=await self._url(client),
                    MessageBody=body,
                    MessageAttributes=attributes,
                    **ordering,
                )
        except ClientError as exc:
            raise self._refused(exc) from None
        except BotoCoreError as exc:
            raise self._failed(exc) from None
        return f"{self._target()} message {answer.get('MessageId', '?')}"

    def _target(self) -> str:
        if self.topic is not None:
            return f"topic {self.topic.arn}"
        assert self.queue is not None
        return f"queue {self.queue.name}"

    def _refused(self, exc: Any) -> DeliveryFailed:
        error = exc.response.get("Error", {})
        code = str(error.get("Code", "Unknown"))
        text = str(error.get("Message") or exc)
        where = self.endpoint.endpoint_url or self._client.meta.endpoint_url
        if code in _MISSING_QUEUE and self.queue is not None:
            self._queue_url = None  # looked up again: it may be created meanwhile
            return DeliveryFailed(
                "Destination.NotFound",
                f"SQS queue {self.queue.name!r} does not exist (at {where})",
            )
        if code in _MISSING_TOPIC and self.topic is not None:
            return DeliveryFailed(
                "Destination.NotFound", f"SNS topic {self.topic.arn} does not exist (at {where})"
            )
        return DeliveryFailed(f"Destination.{code.rpartition('.')[2]}", f"{code}: {text}")

    def _failed(self, exc: Exception) -> DeliveryFailed:
        """What a failure before any answer (no connection, no credentials) is named."""
        from botocore.exceptions import (
            ConnectionError,
            HTTPClientError,
            NoCredentialsError,
            PartialCredentialsError,
        )

        if isinstance(exc, ConnectionError | HTTPClientError):
            return DeliveryFailed("Destination.ConnectionError", f"{self._target()}: {exc}")
        if isinstance(exc, NoCredentialsError | PartialCredentialsError):
            return DeliveryFailed(
                "Destination.NoCredentials",
                f"{self._target()}: {exc} (botocore looks in AWS_ACCESS_KEY_ID and "
                "AWS_SECRET_ACCESS_KEY, AWS_PROFILE and the credentials file, and the "
                "instance's role)",
            )
        return DeliveryFailed("Destination.AwsError", f"{self._target()}: {exc}")

    async def reset(self) -> None:
        """The client's pool reconnects by itself; a queue's URL is looked up again."""
        self._queue_url = None

    async def close(self) -> None:
        async with self._lock:
            self._client = None
            await self._exit.aclose()


def sender(
    destination: ExternalDestination, settings: DestinationConfig, environ: Mapping[str, str]
) -> AwsSender:
    return AwsSender(destination, settings)
