"""The events a mapping's function receives, in Lambda's shapes, and how batches divide.

Pure functions over plain data: pollers turn what their transport read into
:class:`KafkaRecord`, :class:`AmqpMessage` or :class:`StreamEntry` values and
shape a batch with :func:`kafka_event`, :func:`rabbitmq_event` or
:func:`redis_streams_event`; the dispatcher divides a shaped event again
(:func:`bisect_event`, :func:`event_with`) without knowing the transport.

* Kafka (Lambda's self-managed Kafka event)::

    {"eventSource": "SelfManagedKafka", "bootstrapServers": "h:9092",
     "records": {"orders-0": [{"topic", "partition", "offset", "timestamp",
                  "timestampType", "key" (base64), "value" (base64),
                  "headers": [{"name": [byte, …]}]}]}}

  A null key or value is left out, as Lambda does; header bytes are Java's
  signed bytes (-128..127), as Lambda sends them.
* RabbitMQ (Lambda's Amazon MQ for RabbitMQ event)::

    {"eventSource": "aws:rmq", "eventSourceArn": "…",
     "rmqMessagesByQueue": {"emails::/": [{"basicProperties": {…},
                                           "redelivered": false, "data": base64}]}}

* Redis Streams, shaped like Kinesis records::

    {"Records": [{"kinesis": {"kinesisSchemaVersion": "1.0", "partitionKey": stream,
                              "sequenceNumber": entry id, "data": base64 of the fields as JSON,
                              "approximateArrivalTimestamp": seconds},
                  "eventSource": "eventwire:redis-streams", "eventVersion": "1.0",
                  "eventID": "stream:entry id", "eventName": "eventwire:redis-streams:record",
                  "eventSourceARN": "…", "awsRegion": "local", "invokeIdentityArn": ""}]}
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal, Protocol

import msgspec

EventKind = Literal["kafka", "amqp", "redis", "sqs"]

KAFKA_EVENT_SOURCE = "SelfManagedKafka"
RABBITMQ_EVENT_SOURCE = "aws:rmq"
REDIS_STREAMS_EVENT_SOURCE = "eventwire:redis-streams"
SQS_EVENT_SOURCE = "aws:sqs"
KAFKA_TIMESTAMP_TYPES = {0: "CREATE_TIME", 1: "LOG_APPEND_TIME"}


def event_source_arn(kind: EventKind, mapping: str) -> str:
    """The ARN-like name Eventwire gives a mapping's source in events and failure records
    (an SQS queue has an ARN of its own)."""
    service = {"kafka": "kafka", "amqp": "rabbitmq", "redis": "redis-streams", "sqs": "sqs"}[kind]
    return f"arn:eventwire:{service}:local:000000000000:mapping/{mapping}"


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def encode_event(event: Mapping[str, Any]) -> bytes:
    """The payload bytes of an event (compact JSON): what the size limit is checked against."""
    return json.dumps(event, separators=(",", ":"), ensure_ascii=False).encode()


# --- Kafka -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class KafkaRecord:
    topic: str
    partition: int
    offset: int
    timestamp_ms: int
    key: bytes | None = None
    value: bytes | None = None
    headers: Sequence[tuple[str, bytes]] = ()
    timestamp_type: str = "CREATE_TIME"


def kafka_record_json(record: KafkaRecord) -> dict[str, Any]:
    item: dict[str, Any] = {
        "topic": record.topic,
        "partition": record.partition,
        "offset": record.offset,
        "timestamp": record.timestamp_ms,
        "timestampType": record.timestamp_type,
    }
    if record.key is not None:
        item["key"] = _b64(record.key)
    if record.value is not None:
        item["value"] = _b64(record.value)
    item["headers"] = [{name: _java_bytes(value)} for name, value in record.headers]
    return item


def _java_bytes(data: bytes) -> list[int]:
    return [b - 256 if b > 127 else b for b in data]


def kafka_event(records: Sequence[KafkaRecord], *, bootstrap_servers: str) -> dict[str, Any]:
    """Lambda's self-managed Kafka event for ``records`` (grouped by topic-partition, in order)."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for record in records:
        groups.setdefault(f"{record.topic}-{record.partition}", []).append(
            kafka_record_json(record)
        )
    return {
        "eventSource": KAFKA_EVENT_SOURCE,
        "bootstrapServers": bootstrap_servers,
        "records": groups,
    }


class KafkaMessage(Protocol):
    """A Kafka record as the client read it (aiokafka's ``ConsumerRecord``)."""

    @property
    def topic(self) -> str: ...
    @property
    def partition(self) -> int: ...
    @property
    def offset(self) -> int: ...
    @property
    def timestamp(self) -> int: ...
    @property
    def timestamp_type(self) -> int: ...
    @property
    def key(self) -> bytes | None: ...
    @property
    def value(self) -> bytes | None: ...
    @property
    def headers(self) -> Sequence[tuple[str, bytes | None]] | None: ...


class _KafkaItem(msgspec.Struct, kw_only=True, omit_defaults=True, rename="camel", gc=False):
    """One record of Lambda's Kafka event, its keys in Lambda's order; msgspec writes
    ``key`` and ``value`` as base64 and leaves them out when null. Made only to be
    encoded, and never part of a cycle: untracked by the garbage collector."""

    topic: str
    partition: int
    offset: int
    timestamp: int
    timestamp_type: str
    key: bytes | None = None
    value: bytes | None = None
    headers: list[dict[str, list[int]]]


_ENCODER = msgspec.json.Encoder()


class KafkaEventWriter:
    """Lambda's Kafka event written as payload bytes straight from the records read.

    The bytes are those of ``encode_event(kafka_event(records, ...))`` (a test
    holds them equal) for the same records, without building a dict per record
    and encoding it through :mod:`json`: the Kafka poller's hot path. A header
    without a value counts as empty; a timestamp type other than 0 and 1 as
    ``CREATE_TIME``.
    """

    def __init__(self, bootstrap_servers: str) -> None:
        self.bootstrap_servers = bootstrap_servers

    def event(self, records: Sequence[KafkaMessage]) -> bytes:
        """The event of ``records``, grouped by topic-partition in order of first appearance,
        as :func:`kafka_event` groups them."""
        groups: dict[str, list[_KafkaItem]] = {}
        kinds = KAFKA_TIMESTAMP_TYPES
        topic, partition = "", -1
        items: list[_KafkaItem] = []
        for r in records:
            if r.partition != partition or r.topic != topic:
                topic, partition = r.topic, r.partition
                items = groups.setdefault(f"{topic}-{partition}", [])
            headers = r.headers
            items.append(
                _KafkaItem(
                    topic=topic,
                    partition=partition,
                    offset=r.offset,
                    timestamp=r.timestamp,
                    timestamp_type=kinds.get(r.timestamp_type) or kinds[0],
                    key=r.key,
                    value=r.value,
                    headers=[{n: _java_bytes(v or b"")} for n, v in headers] if headers else [],
                )
            )
        return _ENCODER.encode(
            {
                "eventSource": KAFKA_EVENT_SOURCE,
                "bootstrapServers": self.bootstrap_servers,
                "records": groups,
            }
        )


# --- RabbitMQ --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AmqpMessage:
    """One delivered message and its AMQP basic properties."""

    body: bytes
    queue: str
    vhost: str = "/"
    redelivered: bool = False
    content_type: str | None = None
    content_encoding: str | None = None
    headers: Mapping[str, Any] = field(default_factory=dict)
    delivery_mode: int | None = None
    priority: int | None = None
    correlation_id: str | None = None
    reply_to: str | None = None
    expiration: str | None = None
    message_id: str | None = None
    timestamp: datetime | None = None
    type: str | None = None
    user_id: str | None = None
    app_id: str | None = None
    cluster_id: str | None = None


def _rmq_header(value: Any) -> Any:
    """Header values as Lambda writes them: text and bytes as ``{"bytes": [...]}``."""
    if isinstance(value, str):
        return {"bytes": list(value.encode())}
    if isinstance(value, bytes | bytearray):
        return {"bytes": list(value)}
    if isinstance(value, Mapping):
        return {str(k): _rmq_header(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_rmq_header(v) for v in value]
    if isinstance(value, datetime):
        return _rmq_timestamp(value)
    return value


def _rmq_timestamp(moment: datetime) -> str:
    """Lambda's rendering of the AMQP timestamp, e.g. ``Jan 1, 1970, 12:33:41 AM`` (UTC)."""
    moment = moment.astimezone(UTC) if moment.tzinfo else moment
    hour = moment.hour % 12 or 12
    return (
        f"{moment:%b} {moment.day}, {moment.year}, {hour}:{moment:%M:%S} "
        f"{'AM' if moment.hour < 12 else 'PM'}"
    )


def rabbitmq_message_json(message: AmqpMessage) -> dict[str, Any]:
    return {
        "basicProperties": {
            "contentType": message.content_type,
            "contentEncoding": message.content_encoding,
            "headers": _rmq_header(dict(message.headers)),
            "deliveryMode": message.delivery_mode,
            "priority": message.priority,
            "correlationId": message.correlation_id,
            "replyTo": message.reply_to,
            "expiration": message.expiration,
            "messageId": message.message_id,
            "timestamp": _rmq_timestamp(message.timestamp) if message.timestamp else None,
            "type": message.type,
            "userId": message.user_id,
            "appId": message.app_id,
            "clusterId": message.cluster_id,
            "bodySize": len(message.body),
        },
        "redelivered": message.redelivered,
        "data": _b64(message.body),
    }


def rabbitmq_event(messages: Sequence[AmqpMessage], *, event_source_arn: str) -> dict[str, Any]:
    """Lambda's RabbitMQ event: messages grouped under ``queue::vhost``, in delivery order."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for message in messages:
        groups.setdefault(f"{message.queue}::{message.vhost}", []).append(
            rabbitmq_message_json(message)
        )
    return {
        "eventSource": RABBITMQ_EVENT_SOURCE,
        "eventSourceArn": event_source_arn,
        "rmqMessagesByQueue": groups,
    }


# --- Redis Streams ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StreamEntry:
    """One stream entry: its id (``<ms>-<seq>``) and its fields (bytes are read as UTF-8)."""

    stream: str
    entry_id: str
    fields: Mapping[str | bytes, str | bytes]


def _text(value: str | bytes) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


def entry_fields(entry: StreamEntry) -> dict[str, str]:
    """The entry's fields as the JSON object its ``data`` holds (and filters see)."""
    return {_text(name): _text(value) for name, value in entry.fields.items()}


def entry_id_key(entry_id: str) -> tuple[int, int]:
    """A stream entry id as a sortable pair (``1700000000000-3`` → ``(1700000000000, 3)``)."""
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


def redis_stream_record_json(entry: StreamEntry, *, event_source_arn: str) -> dict[str, Any]:
    data = json.dumps(entry_fields(entry), separators=(",", ":"), ensure_ascii=False)
    return {
        "kinesis": {
            "kinesisSchemaVersion": "1.0",
            "partitionKey": entry.stream,
            "sequenceNumber": entry.entry_id,
            "data": _b64(data.encode()),
            "approximateArrivalTimestamp": entry_id_key(entry.entry_id)[0] / 1000,
        },
        "eventSource": REDIS_STREAMS_EVENT_SOURCE,
        "eventVersion": "1.0",
        "eventID": f"{entry.stream}:{entry.entry_id}",
        "eventName": f"{REDIS_STREAMS_EVENT_SOURCE}:record",
        "invokeIdentityArn": "",
        "awsRegion": "local",
        "eventSourceARN": event_source_arn,
    }


def redis_streams_event(entries: Sequence[StreamEntry], *, event_source_arn: str) -> dict[str, Any]:
    """A Kinesis-shaped event for ``entries``, in stream order."""
    return {
        "Records": [
            redis_stream_record_json(entry, event_source_arn=event_source_arn) for entry in entries
        ]
    }


# --- Working with a shaped event ---------------------------------------------------------

Item = tuple[str, dict[str, Any]]
"""One record of an event and the group it belongs to (``topic-partition``, ``queue::vhost``,
or ``""`` for stream records)."""

_GROUPED = {"kafka": "records", "amqp": "rmqMessagesByQueue"}


def event_kind(event: Mapping[str, Any]) -> EventKind:
    """Which kind of mapping event this is; ``ValueError`` for anything else."""
    source = event.get("eventSource")
    if source in (KAFKA_EVENT_SOURCE, "aws:kafka") and isinstance(event.get("records"), dict):
        return "kafka"
    if source == RABBITMQ_EVENT_SOURCE and isinstance(event.get("rmqMessagesByQueue"), dict):
        return "amqp"
    records = event.get("Records")
    if isinstance(records, list):
        first = records[0] if records else None
        if isinstance(first, Mapping) and first.get("eventSource") == SQS_EVENT_SOURCE:
            return "sqs"
        return "redis"
    raise ValueError("not a Kafka, RabbitMQ, Redis Streams or SQS mapping event")


def event_items(event: Mapping[str, Any]) -> list[Item]:
    """Every record of ``event`` with its group (an SQS record's FIFO message group), in
    event order."""
    kind = event_kind(event)
    if kind == "redis":
        return [("", record) for record in event["Records"]]
    if kind == "sqs":
        return [
            (str(record.get("attributes", {}).get("MessageGroupId", "")), record)
            for record in event["Records"]
        ]
    groups: dict[str, list[dict[str, Any]]] = event[_GROUPED[kind]]
    return [(group, record) for group, records in groups.items() for record in records]


def event_with(event: Mapping[str, Any], items: Sequence[Item]) -> dict[str, Any]:
    """``event``'s envelope around ``items`` (a subset of its records, in the order given)."""
    kind = event_kind(event)
    shaped = {
        key: value for key, value in event.items() if key not in ("Records", *_GROUPED.values())
    }
    if kind in ("redis", "sqs"):
        shaped["Records"] = [record for _, record in items]
        return shaped
    groups: dict[str, list[dict[str, Any]]] = {}
    for group, record in items:
        groups.setdefault(group, []).append(record)
    shaped[_GROUPED[kind]] = groups
    return shaped


def bisect_event(event: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The two halves of a batch (the first half the larger), for bisect-on-error.

    ``ValueError`` when the batch holds fewer than two records.
    """
    items = event_items(event)
    if len(items) < 2:
        raise ValueError("a batch of fewer than two records cannot be split")
    middle = (len(items) + 1) // 2
    return event_with(event, items[:middle]), event_with(event, items[middle:])


@dataclass(frozen=True, slots=True)
class SplitEvents:
    """A batch divided to fit a payload limit."""

    events: list[dict[str, Any]]
    """Events of consecutive records, in order, each within the limit."""
    oversized: list[dict[str, Any]]
    """Single-record events that exceed the limit on their own (Lambda's
    ``MaximumPayloadSizeExceeded``): they cannot be delivered."""


def split_to_fit(event: Mapping[str, Any], limit_bytes: int) -> SplitEvents:
    """Divide ``event`` into events whose :func:`encode_event` is at most ``limit_bytes``.

    Records keep their order; each part is as large as fits. A record too large
    for any event is set apart in ``oversized``, in its own event.
    """
    items = event_items(event)
    if len(encode_event(event)) <= limit_bytes:
        return SplitEvents([dict(event)], [])
    overhead = len(encode_event(event_with(event, [])))
    events: list[dict[str, Any]] = []
    chunk: list[Item] = []
    estimate = overhead
    for item in items:
        # A record costs its JSON and a comma; the first of a group, the group's
        # key too (``"key":[`` and ``],``). Records of a group are consecutive.
        record_cost = len(encode_event(item[1])) + 1
        group_cost = len(json.dumps(item[0], ensure_ascii=False).encode()) + 4
        new_group = not chunk or chunk[-1][0] != item[0]
        cost = record_cost + (group_cost if new_group and item[0] else 0)
        if chunk and estimate + cost > limit_bytes:
            events.extend(_fitting(event, chunk, limit_bytes))
            chunk, estimate = [], overhead
            cost = record_cost + (group_cost if item[0] else 0)
        chunk.append(item)
        estimate += cost
    if chunk:
        events.extend(_fitting(event, chunk, limit_bytes))
    kept = [part for part in events if len(encode_event(part)) <= limit_bytes]
    oversized = [part for part in events if len(encode_event(part)) > limit_bytes]
    return SplitEvents(kept, oversized)


def _fitting(event: Mapping[str, Any], chunk: list[Item], limit_bytes: int) -> list[dict[str, Any]]:
    """``chunk`` as one event if it fits, else halved until each part fits or is one record."""
    shaped = event_with(event, chunk)
    if len(chunk) == 1 or len(encode_event(shaped)) <= limit_bytes:
        return [shaped]
    middle = len(chunk) // 2
    return _fitting(event, chunk[:middle], limit_bytes) + _fitting(
        event, chunk[middle:], limit_bytes
    )
