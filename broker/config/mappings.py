"""Event source mappings in ``eventwire.yaml``: a source, a function, and how records reach it.

```yaml
mappings:
  - name: orders
    source: kafka://localhost:9092/orders         # consumer group: the mapping's name
    function: process_orders
    batch_size: 100
    batch_window: 500ms
    starting_position: trim_horizon
    filters: [{value: {type: [order_created]}}]
  - name: uploads
    source: amqp://guest:guest@localhost:5672/%2F?queue=minio-events
    function: make_thumbnail
    object_notifications: {events: ["s3:ObjectCreated:*"], suffix: .jpg}
```

With ``object_notifications`` each record is an S3 notification document and
each S3 record in it one invocation (:mod:`pollers.s3.documents`); the keys
about batches and their retries do not apply, and are refused by name
(:data:`NOT_WITH_NOTIFICATIONS`).

Defaults and limits are Lambda's. Checks that need the whole file (the
function exists, names are unique, an option fits the source kind) are made
by :func:`check_mappings` after the models validate, so every error names the
file, line and key.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cached_property
from typing import Annotated, Any, Literal
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator, model_validator

from broker.aws.names import Queue, parse_queue
from broker.config.durations import parse_duration
from broker.config.errors import config_error
from broker.config.notifications import MappingNotifications, mapping_notifications
from broker.events.filters import FilterError, RecordFilter, compile_filters

KeyPath = tuple[str, ...]

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")

MAX_BATCH_SIZE = 10_000
MAX_BATCH_WINDOW_S = 300.0
MAX_RECORD_AGE_S = 7 * 24 * 3600.0
MAX_RETRY_ATTEMPTS = 10_000
DEFAULT_CLAIM_IDLE_S = 5.0
MIN_CLAIM_IDLE_S = 1.0
MAX_CLAIM_IDLE_S = 3600.0
SQS_MAX_UNWINDOWED_BATCH = 10
"""Lambda's rule: an SQS batch above this size needs a batch window above 0."""
SQS_MIN_CONCURRENCY = 2
REPORT_BATCH_ITEM_FAILURES = "ReportBatchItemFailures"


class SourceKind(enum.StrEnum):
    KAFKA = "kafka"
    AMQP = "amqp"
    REDIS = "redis"
    SQS = "sqs"


@dataclass(frozen=True, slots=True)
class KafkaSource:
    """``kafka://host:port[,host:port…]/topic[?group=NAME]``."""

    uri: str
    bootstrap_servers: tuple[str, ...]
    topic: str
    group: str | None

    kind = SourceKind.KAFKA


@dataclass(frozen=True, slots=True)
class AmqpSource:
    """``amqp[s]://user:pass@host:port/vhost?queue=NAME``; ``url`` is the URI without ``queue``."""

    uri: str
    url: str
    queue: str
    vhost: str

    kind = SourceKind.AMQP


@dataclass(frozen=True, slots=True)
class RedisStreamSource:
    """``redis[s]://host:port/db?stream=KEY[&group=NAME]``; ``url`` is the URI without them."""

    uri: str
    url: str
    stream: str
    group: str | None

    kind = SourceKind.REDIS


@dataclass(frozen=True, slots=True)
class SqsSource:
    """``sqs://HOST/ACCOUNT/QUEUE`` or ``arn:aws:sqs:REGION:ACCOUNT:QUEUE``."""

    uri: str
    queue: Queue

    kind = SourceKind.SQS


Source = KafkaSource | AmqpSource | RedisStreamSource | SqsSource

_SCHEMES = {
    "kafka": SourceKind.KAFKA,
    "amqp": SourceKind.AMQP,
    "amqps": SourceKind.AMQP,
    "redis": SourceKind.REDIS,
    "rediss": SourceKind.REDIS,
}
_EXPECTED_URI = (
    "expected kafka://host:port/topic, amqp://user:pass@host:port/vhost?queue=NAME, "
    "redis://host:port/db?stream=KEY&group=NAME, sqs://HOST/ACCOUNT/QUEUE "
    "or arn:aws:sqs:REGION:ACCOUNT:QUEUE"
)


def parse_source(uri: str) -> Source:
    """The source a mapping reads; ``ValueError`` saying what is wrong and what was expected."""
    if uri.startswith(("sqs://", "arn:aws:sqs:", "arn:aws-")):
        return SqsSource(uri, parse_queue(uri))
    parts = urlsplit(uri)
    kind = _SCHEMES.get(parts.scheme)
    if kind is None or not parts.netloc:
        raise ValueError(f"unknown source {uri!r}; {_EXPECTED_URI}")
    query = dict(parse_qsl(parts.query, keep_blank_values=True))
    if kind is SourceKind.KAFKA:
        return _kafka(uri, parts.netloc, parts.path, query)
    if kind is SourceKind.AMQP:
        queue = query.pop("queue", "")
        if not queue:
            raise ValueError(f"{uri!r} names no queue; add ?queue=NAME")
        vhost = unquote(parts.path[1:]) if len(parts.path) > 1 else "/"
        url = urlunsplit(parts._replace(query=urlencode(query)))
        return AmqpSource(uri, url, queue, vhost)
    stream = query.pop("stream", "")
    group = query.pop("group", None)
    if not stream:
        raise ValueError(f"{uri!r} names no stream; add ?stream=KEY")
    if group == "":
        raise ValueError(f"{uri!r}: group is empty; give a consumer group name or leave it out")
    url = urlunsplit(parts._replace(query=urlencode(query)))
    return RedisStreamSource(uri, url, stream, group)


def _kafka(uri: str, netloc: str, path: str, query: dict[str, str]) -> KafkaSource:
    servers = tuple(server.strip() for server in netloc.split(",") if server.strip())
    for server in servers:
        host, _, port = server.rpartition(":")
        if not host or not port.isdigit():
            raise ValueError(f"{uri!r}: bootstrap server {server!r} is not host:port")
    topic = unquote(path.strip("/"))
    if not topic or "/" in topic:
        raise ValueError(f"{uri!r} names no topic; expected kafka://host:port/topic")
    group = query.pop("group", None)
    if query:
        raise ValueError(f"{uri!r}: unknown option {next(iter(query))!r}; expected: group")
    if group == "":
        raise ValueError(f"{uri!r}: group is empty; give a consumer group name or leave it out")
    return KafkaSource(uri, servers, topic, group)


def _max_record_age(value: object) -> float | None:
    """Seconds, or None for ``-1`` (records never expire: Lambda's default)."""
    if value is None or value == -1 or value == "-1":
        return None
    seconds = parse_duration(value)
    if seconds <= 0 or seconds > MAX_RECORD_AGE_S:
        raise ValueError(f"expected -1 (no limit) or a duration up to 7d, got {value!r}")
    return seconds


def _optional_duration(value: object) -> float | None:
    return None if value is None else parse_duration(value)


def _timestamp(value: object) -> datetime | None:
    """An ISO 8601 time (naive times are UTC) or a number of epoch seconds."""
    if value is None:
        return None
    if isinstance(value, datetime):
        moment = value
    elif isinstance(value, int | float) and not isinstance(value, bool):
        moment = datetime.fromtimestamp(value, UTC)
    elif isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        except ValueError:
            raise ValueError(
                f"expected an ISO 8601 time like 2026-01-31T12:00:00Z, got {value!r}"
            ) from None
    else:
        raise ValueError(f"expected an ISO 8601 time like 2026-01-31T12:00:00Z, got {value!r}")
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


class MappingConfig(BaseModel):
    """One event source mapping; ``None`` fields take the source kind's default."""

    model_config = ConfigDict(
        extra="forbid", frozen=True, populate_by_name=True, ignored_types=(cached_property,)
    )

    name: str
    source: str
    function: str
    enabled: bool = True
    batch_size_set: int | None = Field(None, alias="batch_size", ge=1, le=MAX_BATCH_SIZE)
    batch_window_set_s: Annotated[float | None, BeforeValidator(_optional_duration)] = Field(
        None, alias="batch_window", ge=0, le=MAX_BATCH_WINDOW_S
    )
    starting_position_set: Literal["latest", "trim_horizon", "at_timestamp"] | None = Field(
        None, alias="starting_position"
    )
    starting_timestamp: Annotated[datetime | None, BeforeValidator(_timestamp)] = None
    filters: list[Any] = Field(default_factory=list)
    report_batch_item_failures: bool = False
    bisect_on_error: bool = False
    max_retry_attempts: int = Field(-1, ge=-1, le=MAX_RETRY_ATTEMPTS)
    max_record_age_s: Annotated[float | None, BeforeValidator(_max_record_age)] = Field(
        None, alias="max_record_age"
    )
    max_concurrency: int | None = Field(None, ge=1, le=1000)
    on_failure: str | None = None
    object_notifications: Annotated[
        MappingNotifications | None, BeforeValidator(mapping_notifications)
    ] = None
    claim_idle_set_s: Annotated[float | None, BeforeValidator(_optional_duration)] = Field(
        None, alias="claim_idle", ge=MIN_CLAIM_IDLE_S, le=MAX_CLAIM_IDLE_S
    )
    endpoint_url: str | None = Field(None, pattern=r"^https?://[^/?#\s]+/?$")
    """SQS: where the queue's API answers (else botocore's chain: ``AWS_ENDPOINT_URL_SQS``,
    ``AWS_ENDPOINT_URL``, the profile; else AWS itself)."""
    region: str | None = Field(None, pattern=r"^[a-z0-9-]{2,32}$")
    """SQS: the region to sign for (else the one the queue's URL or ARN says, else the chain)."""

    @model_validator(mode="before")
    @classmethod
    def _response_types(cls, data: Any) -> Any:
        """Lambda's ``function_response_types: [ReportBatchItemFailures]`` spelling of
        ``report_batch_item_failures: true``."""
        if not isinstance(data, Mapping) or "function_response_types" not in data:
            return data
        data = dict(data)
        types = data.pop("function_response_types")
        if types is None:
            types = []
        if not isinstance(types, list) or any(t != REPORT_BATCH_ITEM_FAILURES for t in types):
            raise ValueError(
                f"function_response_types: expected [] or [{REPORT_BATCH_ITEM_FAILURES}], "
                f"got {types!r}"
            )
        if types:
            data["report_batch_item_failures"] = True
        return data

    @field_validator("name")
    @classmethod
    def _name(cls, name: str) -> str:
        if not _NAME.match(name):
            raise ValueError(f"mapping name {name!r} must be 1-64 letters, digits, '_', '-' or '.'")
        return name

    @field_validator("source")
    @classmethod
    def _source(cls, uri: str) -> str:
        parse_source(uri)
        return uri

    @cached_property
    def parsed_source(self) -> Source:
        return parse_source(self.source)

    @property
    def kind(self) -> SourceKind:
        return self.parsed_source.kind

    @property
    def batch_size(self) -> int:
        """Lambda's default is 100 for Kafka, Amazon MQ and streams, 10 for SQS."""
        if self.batch_size_set is not None:
            return self.batch_size_set
        return 10 if self.kind is SourceKind.SQS else 100

    @property
    def batch_window_s(self) -> float:
        """Lambda's default: 500 ms for Kafka and MQ, none for streams and SQS (nor for
        documents of object notifications, which are invoked one S3 record at a time)."""
        if self.batch_window_set_s is not None:
            return self.batch_window_set_s
        if self.object_notifications is not None:
            return 0.0
        return 0.0 if self.kind in (SourceKind.REDIS, SourceKind.SQS) else 0.5

    @property
    def starting_position(self) -> str | None:
        """Where a new consumer group starts (``latest`` by default); None for queues."""
        if self.kind in (SourceKind.AMQP, SourceKind.SQS):
            return None
        return self.starting_position_set or "latest"

    @property
    def consumer_group(self) -> str | None:
        """The Kafka or Redis consumer group: the one in the URI, else the mapping's name."""
        source = self.parsed_source
        if isinstance(source, AmqpSource | SqsSource):
            return None
        return source.group or self.name

    @property
    def claim_idle_s(self) -> float:
        """Redis Streams: how long a stream's reader may fall silent before another ``serve``
        process takes the stream over and claims what it read and did not acknowledge."""
        return self.claim_idle_set_s if self.claim_idle_set_s is not None else DEFAULT_CLAIM_IDLE_S

    @property
    def lane_ordered(self) -> bool:
        """Kafka partitions and Redis streams deliver in order; queues' batches do not (an
        SQS FIFO queue's groups are ordered by the queue itself)."""
        return self.kind not in (SourceKind.AMQP, SourceKind.SQS)

    @cached_property
    def record_filter(self) -> RecordFilter:
        """The compiled filters (raises :class:`FilterError` when one is invalid)."""
        data_key, aliases = _DATA_KEYS[self.kind]
        metadata = SQS_FILTER_METADATA if self.kind is SourceKind.SQS else ()
        return compile_filters(
            self.filters, data_key=data_key, data_aliases=aliases, metadata_keys=metadata
        )


_PER_FUNCTION = (
    "its invocations are retried by the function's own policy (functions.{function}.retry), "
    "as object notifications from webhooks are"
)
NOT_WITH_NOTIFICATIONS: dict[str, tuple[str, str]] = {
    # attribute: (key in eventwire.yaml, why it does not apply)
    "batch_size_set": ("batch_size", "every S3 record is an invocation of its own"),
    "batch_window_set_s": ("batch_window", "every S3 record is an invocation of its own"),
    "max_concurrency": (
        "max_concurrency",
        "S3 records run in parallel, as many at once as the function allows "
        "(functions.{function}.reserved_concurrency)",
    ),
    "report_batch_item_failures": ("report_batch_item_failures", "there is no batch"),
    "bisect_on_error": ("bisect_on_error", "there is no batch"),
    "max_retry_attempts": ("max_retry_attempts", _PER_FUNCTION),
    "max_record_age_s": ("max_record_age", _PER_FUNCTION),
}
"""Keys of a mapping that do not apply with ``object_notifications``, and why."""

_DATA_KEYS: dict[SourceKind, tuple[str, tuple[str, ...]]] = {
    SourceKind.KAFKA: ("value", ()),
    SourceKind.AMQP: ("data", ("body",)),
    SourceKind.REDIS: ("data", ()),
    SourceKind.SQS: ("body", ()),
}
SQS_FILTER_METADATA = (
    "messageId", "attributes", "messageAttributes", "md5OfBody",
    "eventSource", "eventSourceARN", "awsRegion",
)  # fmt: skip
"""The fields of an SQS record a filter may look at besides its ``body`` (Lambda's)."""

_SQS_REDRIVES = (
    "the queue redelivers a failed batch's messages after its visibility timeout, and its "
    "own redrive policy (maxReceiveCount, a dead-letter queue) says when to give up"
)
NOT_WITH_SQS: dict[str, tuple[str, str]] = {
    "starting_position_set": ("starting_position", "an SQS queue has no position"),
    "starting_timestamp": ("starting_timestamp", "an SQS queue has no position"),
    "bisect_on_error": ("bisect_on_error", _SQS_REDRIVES),
    "max_retry_attempts": ("max_retry_attempts", _SQS_REDRIVES),
    "max_record_age_s": ("max_record_age", _SQS_REDRIVES),
    "on_failure": ("on_failure", _SQS_REDRIVES),
    "object_notifications": (
        "object_notifications",
        "S3 notification documents are read from kafka, amqp and redis sources",
    ),
}
"""Keys of a mapping that do not apply to an SQS source, and why."""


def check_mappings(
    mappings: list[MappingConfig],
    functions: Mapping[str, object],
    source: str,
    lines: Mapping[KeyPath, int],
) -> None:
    """The checks that need the whole file; a :class:`ConfigError` names file:line: key."""
    seen: dict[str, int] = {}
    for index, mapping in enumerate(mappings):
        problem = _problem(mapping, index, functions, seen)
        if problem is not None:
            path, message = problem
            raise config_error(source, lines, path, message)
        seen[mapping.name] = index


def _problem(
    mapping: MappingConfig, index: int, functions: Mapping[str, object], seen: dict[str, int]
) -> tuple[KeyPath, str] | None:
    at = ("mappings", str(index))
    if mapping.name in seen:
        return (*at, "name"), (
            f"mapping name {mapping.name!r} is already used by mappings.{seen[mapping.name]}"
        )
    known = ", ".join(sorted(functions)) or "none"
    if mapping.function not in functions:
        return (*at, "function"), (
            f"mapping {mapping.name!r} targets unknown function {mapping.function!r}; "
            f"configured functions: {known}"
        )
    return _notifications_problem(mapping, at) or _source_problem(mapping, at)


def _source_problem(mapping: MappingConfig, at: KeyPath) -> tuple[KeyPath, str] | None:
    kind = mapping.kind
    if kind is SourceKind.SQS:
        problem = _sqs_problem(mapping, at)
        if problem is not None:
            return problem
    else:
        for key in ("endpoint_url", "region"):
            if key in mapping.model_fields_set:
                return (*at, key), (
                    "applies to sqs sources (where the queue's API answers); this mapping "
                    f"reads {kind.value}, whose URI says where"
                )
    if kind is SourceKind.AMQP:
        if mapping.starting_position_set is not None:
            return (*at, "starting_position"), (
                "applies to kafka and redis stream sources; a RabbitMQ queue has no position"
            )
    elif mapping.max_concurrency is not None and kind is not SourceKind.SQS:
        return (*at, "max_concurrency"), (
            "applies to amqp and sqs sources; kafka partitions and redis streams run one "
            "batch at a time each, in order"
        )
    if kind is not SourceKind.REDIS and mapping.claim_idle_set_s is not None:
        return (*at, "claim_idle"), (
            "applies to redis stream sources (another serve process claims what a silent "
            "reader left pending); kafka partitions move by group rebalancing and RabbitMQ "
            "redelivers unacknowledged messages by itself"
        )
    if (mapping.starting_position_set == "at_timestamp") != (
        mapping.starting_timestamp is not None
    ):
        key = (
            "starting_timestamp" if mapping.starting_timestamp is not None else "starting_position"
        )
        return (*at, key), "starting_timestamp is required with, and only with, at_timestamp"
    try:
        mapping.record_filter  # noqa: B018 (compiles and caches the filters)
    except FilterError as exc:
        if exc.index is None:
            return (*at, "filters"), str(exc)
        return (*at, "filters", str(exc.index - 1)), str(exc).removeprefix(f"filter {exc.index}: ")
    return None


def _sqs_problem(mapping: MappingConfig, at: KeyPath) -> tuple[KeyPath, str] | None:
    given = mapping.model_fields_set
    for attribute, (key, why) in NOT_WITH_SQS.items():
        if attribute in given and getattr(mapping, attribute) not in (None, False, -1):
            return (*at, key), f"does not apply to sqs sources: {why}"
    if mapping.batch_size > SQS_MAX_UNWINDOWED_BATCH and mapping.batch_window_s <= 0:
        key = "batch_window" if mapping.batch_window_set_s is not None else "batch_size"
        return (*at, key), (
            f"a batch_size above {SQS_MAX_UNWINDOWED_BATCH} ({mapping.batch_size}) needs a "
            "batch_window above 0 for sqs sources (as in Lambda); e.g. batch_window: 1s"
        )
    if mapping.max_concurrency is not None and mapping.max_concurrency < SQS_MIN_CONCURRENCY:
        return (*at, "max_concurrency"), (
            f"expected {SQS_MIN_CONCURRENCY} to 1000 for sqs sources (Lambda's maximum "
            f"concurrency), got {mapping.max_concurrency}"
        )
    return None


def _notifications_problem(mapping: MappingConfig, at: KeyPath) -> tuple[KeyPath, str] | None:
    notifications = mapping.object_notifications
    if notifications is None:
        return None
    given = mapping.model_fields_set
    for attribute, (key, why) in NOT_WITH_NOTIFICATIONS.items():
        if attribute in given:
            return (*at, key), (
                f"does not apply with object_notifications: {why.format(function=mapping.function)}"
            )
    if notifications.entry_field is not None and mapping.kind is not SourceKind.REDIS:
        return (*at, "object_notifications", "field"), (
            "applies to redis stream sources only (a Kafka record's value or a RabbitMQ "
            "message's body is the document)"
        )
    return None
