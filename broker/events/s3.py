"""S3 event notification documents: reading them, filtering them, shaping Lambda's S3 event.

MinIO and Ceph RGW POST (or publish to AMQP, Kafka, Redis) documents like
Amazon S3's::

    {"EventName": "s3:ObjectCreated:Put", "Key": "images/a.jpg",      # MinIO only
     "Records": [{"eventName": "s3:ObjectCreated:Put", "eventTime": "…",
                  "s3": {"bucket": {"name": "images", …},
                         "object": {"key": "a.jpg", "size": 248682,
                                    "eTag": "f1671f…", "sequencer": "14CF20BD1EFD5B93"}}}]}

Everything here is pure: :func:`parse_notification` validates a document and
answers one :class:`S3Record` per record (a reason naming the place when it
is malformed), :class:`S3Filter` is the ``events``/``prefix``/``suffix``
filter of a notification, :func:`lambda_event` is the event a Lambda
function receives for one record (``{"Records": [one record]}``, with
``eventSource: aws:s3`` and ``eventName`` without its ``s3:`` prefix, as
Lambda delivers it), and :func:`dedup_key` the idempotency key that makes a
notification delivered twice (or through a webhook and a mapping) one invocation.

Object keys arrive URL-encoded, as S3 sends them (``Tile_%2B002.mtl``);
``prefix`` and ``suffix`` are compared with the decoded key.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote_plus, unquote_plus

DEFAULT_EVENTS = ("s3:ObjectCreated:*", "s3:ObjectRemoved:*")
EVENT_PATTERN = re.compile(r"^(s3:)?(\*|[A-Z][A-Za-z]*(:[A-Za-z]+)*(:\*)?)$")
TEST_EVENT = "s3:TestEvent"
LOCAL_ADDRESS = "127.0.0.1"
"""The ``sourceIPAddress`` of events from local sources (a watched directory), and of
documents that name no sender."""
# The event categories of S3, MinIO and Ceph RGW: what a notification's ``events`` may name.
CATEGORIES = frozenset(
    {
        "ObjectCreated",
        "ObjectRemoved",
        "ObjectRestore",
        "ObjectAccessed",
        "ObjectTagging",
        "ObjectAcl",
        "ObjectLifecycle",
        "ObjectSynced",
        "ObjectTransition",
        "Replication",
        "LifecycleExpiration",
        "LifecycleTransition",
        "IntelligentTiering",
        "ReducedRedundancyLostObject",
    }
)


class S3DocumentError(ValueError):
    """A notification document that is not an S3 event document; the message says why."""


@dataclass(frozen=True, slots=True)
class S3Record:
    """One record of a notification document, validated.

    ``event_name`` always carries the ``s3:`` prefix (Ceph sends it without);
    ``key`` is URL-encoded as sent; ``raw`` is the record as it came.
    """

    event_name: str
    bucket: str
    key: str
    size: int | None = None
    etag: str | None = None
    sequencer: str | None = None
    version_id: str | None = None
    event_time: str | None = None
    region: str | None = None
    raw: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def decoded_key(self) -> str:
        return unquote_plus(self.key)


def parse_notification(document: bytes | str | Mapping[str, Any]) -> list[S3Record]:
    """The records of an S3 event notification document (bytes, text or parsed JSON).

    An ``s3:TestEvent`` (sent when a notification is configured) has no
    records. Raises :class:`S3DocumentError` naming what is wrong.
    """
    data: Any = document
    if isinstance(document, bytes | str):
        try:
            data = json.loads(document)
        except (ValueError, RecursionError) as exc:
            raise S3DocumentError(f"not JSON: {exc}") from None
    if not isinstance(data, Mapping):
        raise S3DocumentError(f"expected a JSON object, got {_kind(data)}")
    if "Records" not in data:
        if data.get("Event") == TEST_EVENT:
            return []
        raise S3DocumentError("no Records: expected an S3 event notification document")
    records = data["Records"]
    if not isinstance(records, list):
        raise S3DocumentError(f"Records: expected a list, got {_kind(records)}")
    return [parse_record(record, f"Records[{i}]") for i, record in enumerate(records)]


def parse_record(record: Any, where: str = "record") -> S3Record:
    """One record of a document; ``where`` is its place for error messages."""
    if not isinstance(record, Mapping):
        raise S3DocumentError(f"{where}: expected an object, got {_kind(record)}")
    name = _text(record, "eventName", where, required=True)
    assert name is not None
    if not EVENT_PATTERN.match(name):
        raise S3DocumentError(f"{where}.eventName: not an S3 event name: {name!r}")
    s3 = record.get("s3")
    if not isinstance(s3, Mapping):
        raise S3DocumentError(f"{where}.s3: expected an object, got {_kind(s3)}")
    bucket = s3.get("bucket")
    if not isinstance(bucket, Mapping):
        raise S3DocumentError(f"{where}.s3.bucket: expected an object, got {_kind(bucket)}")
    obj = s3.get("object")
    if not isinstance(obj, Mapping):
        raise S3DocumentError(f"{where}.s3.object: expected an object, got {_kind(obj)}")
    bucket_name = _text(bucket, "name", f"{where}.s3.bucket", required=True)
    key = _text(obj, "key", f"{where}.s3.object", required=True)
    assert bucket_name is not None and key is not None
    if not bucket_name or not key:
        raise S3DocumentError(f"{where}.s3: bucket name and object key must not be empty")
    return S3Record(
        event_name=name if name.startswith("s3:") else f"s3:{name}",
        bucket=bucket_name,
        key=key,
        size=_size(obj.get("size"), f"{where}.s3.object.size"),
        etag=_text(obj, "eTag", f"{where}.s3.object") or None,
        sequencer=_text(obj, "sequencer", f"{where}.s3.object") or None,
        version_id=_text(obj, "versionId", f"{where}.s3.object") or None,
        event_time=_text(record, "eventTime", where) or None,
        region=_text(record, "awsRegion", where) or None,
        raw=record,
    )


@dataclass(frozen=True, slots=True)
class S3Filter:
    """S3's notification filter: event types (``s3:ObjectCreated:*``), key prefix and suffix."""

    events: Sequence[str] = DEFAULT_EVENTS
    prefix: str = ""
    suffix: str = ""

    def matches(self, record: S3Record) -> bool:
        key = record.decoded_key
        if not (key.startswith(self.prefix) and key.endswith(self.suffix)):
            return False
        return any(event_matches(pattern, record.event_name) for pattern in self.events)


def event_matches(pattern: str, event_name: str) -> bool:
    """``s3:ObjectCreated:*`` matches ``s3:ObjectCreated:Put``; ``s3:`` is optional on both."""
    pattern = pattern.removeprefix("s3:")
    name = event_name.removeprefix("s3:")
    if pattern == "*":
        return True
    if pattern.endswith(":*"):
        return name.startswith(pattern[:-1])
    return name == pattern


def lambda_record(
    record: S3Record, *, region: str = "local", sender: str = LOCAL_ADDRESS
) -> dict[str, Any]:
    """One record in the shape Lambda gives an S3-triggered function; ``sender`` is the
    address the document came from, for a record that names none."""
    raw = record.raw
    bucket_raw = _mapping(_mapping(raw.get("s3")).get("bucket"))
    obj: dict[str, Any] = {"key": record.key}
    if record.size is not None:
        obj["size"] = record.size
    if record.etag is not None:
        obj["eTag"] = record.etag
    if record.version_id is not None:
        obj["versionId"] = record.version_id
    if record.sequencer is not None:
        obj["sequencer"] = record.sequencer
    owner = _mapping(bucket_raw.get("ownerIdentity")).get("principalId", "")
    response = _mapping(raw.get("responseElements"))
    return {
        "eventVersion": str(raw.get("eventVersion") or "2.1"),
        "eventSource": "aws:s3",
        "awsRegion": record.region or region,
        "eventTime": record.event_time or "",
        "eventName": record.event_name.removeprefix("s3:"),
        "userIdentity": {
            "principalId": str(_mapping(raw.get("userIdentity")).get("principalId", ""))
        },
        "requestParameters": {"sourceIPAddress": source_address(raw, sender)},
        "responseElements": {
            "x-amz-request-id": str(response.get("x-amz-request-id", "")),
            "x-amz-id-2": str(response.get("x-amz-id-2", "")),
        },
        "s3": {
            "s3SchemaVersion": "1.0",
            "configurationId": str(_mapping(raw.get("s3")).get("configurationId", "")),
            "bucket": {
                "name": record.bucket,
                "ownerIdentity": {"principalId": str(owner)},
                "arn": f"arn:aws:s3:::{record.bucket}",
            },
            "object": obj,
        },
    }


def lambda_event(
    record: S3Record, *, region: str = "local", sender: str = LOCAL_ADDRESS
) -> dict[str, Any]:
    """The event of one invocation: ``{"Records": [the record]}``, as Lambda sends it."""
    return {"Records": [lambda_record(record, region=region, sender=sender)]}


def source_address(raw: Mapping[str, Any], sender: str = LOCAL_ADDRESS) -> str:
    """``requestParameters.sourceIPAddress`` as S3 gives it: an IP address, never empty.

    MinIO sends ``host:port`` (the port is dropped) or names the client in
    ``source.host``; Ceph RGW sends ``""``; then the address the document came
    from (``sender``) stands in.
    """
    given = str(_mapping(raw.get("requestParameters")).get("sourceIPAddress") or "")
    for candidate in (given, str(_mapping(raw.get("source")).get("host") or ""), sender):
        address = _ip_address(candidate)
        if address:
            return address
    return LOCAL_ADDRESS


def _ip_address(text: str) -> str | None:
    """``text`` as an IP address (``1.2.3.4``, ``1.2.3.4:80``, ``[::1]:80``, ``::1``)."""
    text = text.strip()
    host = text
    if text.startswith("["):
        host = text[1:].partition("]")[0]
    elif text.count(":") == 1:
        host = text.partition(":")[0]
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        return None


def dedup_key(function: str, record: S3Record, *, replay: int = 0) -> str:
    """The idempotency key of invoking ``function`` for ``record``.

    Two deliveries of one event share bucket, key, event name and sequencer
    (or, from a sender without sequencers, eTag and event time; failing
    those, the whole record), whichever webhook or mapping they came
    through. ``replay`` (a mapping's seek generation) makes a deliberate
    replay a new invocation. Hashed, as object keys run to 1 KiB.
    """
    if record.sequencer:
        version = f"seq:{record.sequencer}"
    elif record.etag or record.event_time:
        version = f"etag:{record.etag or ''}:{record.event_time or ''}"
    else:
        version = "raw:" + json.dumps(record.raw, sort_keys=True, default=str)
    if replay:
        version += f":replay:{replay}"
    return object_key(function, record.bucket, record.key, record.event_name, version)


def object_key(scope: str, bucket: str, key: str, event_name: str, version: str) -> str:
    """``s3:<scope>:<sha256 of bucket, key, event and version>``."""
    digest = hashlib.sha256("\0".join((bucket, key, event_name, version)).encode()).hexdigest()
    return f"s3:{scope}:{digest}"


def encode_key(path: str) -> str:
    """An object key URL-encoded the way S3 puts it in notifications (``a b/c`` → ``a+b/c``)."""
    return quote_plus(path, safe="/")


def check_event_patterns(patterns: Iterable[str]) -> None:
    """Raise ValueError for a pattern that is no S3 event type."""
    for pattern in patterns:
        category = pattern.removeprefix("s3:").split(":")[0]
        if not EVENT_PATTERN.match(pattern) or category not in {"*", *CATEGORIES}:
            raise ValueError(
                f"not an S3 event type: {pattern!r}; expected e.g. s3:ObjectCreated:*, "
                "s3:ObjectCreated:Put or s3:ObjectRemoved:Delete"
            )


def _text(data: Mapping[str, Any], name: str, where: str, *, required: bool = False) -> str | None:
    value = data.get(name)
    if value is None:
        if required:
            raise S3DocumentError(f"{where}.{name}: missing")
        return None
    if not isinstance(value, str):
        raise S3DocumentError(f"{where}.{name}: expected a string, got {_kind(value)}")
    return value


def _size(value: Any, where: str) -> int | None:
    """Object size: a number, or (Ceph) a string of digits."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise S3DocumentError(f"{where}: expected a number, got {_kind(value)}")
    if isinstance(value, str):
        if not value.isdigit():
            raise S3DocumentError(f"{where}: expected a number, got {value!r}")
        return int(value)
    if value < 0:
        raise S3DocumentError(f"{where}: expected 0 or more, got {value}")
    return value


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _kind(value: Any) -> str:
    return {dict: "an object", list: "a list", str: "a string", type(None): "null"}.get(
        type(value), type(value).__name__
    )
