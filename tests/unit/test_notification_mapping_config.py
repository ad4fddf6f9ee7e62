"""A mapping's ``object_notifications:``: what loads, what is refused (by file:line: key)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from broker.config.mappings import MappingConfig
from broker.errors import ConfigError
from broker.loading import load_config
from broker.store.mappings import _hash

HEAD = """functions:
  thumbs: {handler: 'm:f'}
mappings:
"""

ISSUE_EXAMPLE = """  - name: uploads-from-minio
    source: amqp://guest:guest@localhost:5672/%2F?queue=minio-events
    function: thumbs
    object_notifications:
      events: ["s3:ObjectCreated:*"]
      prefix: incoming/
      suffix: .jpg
  - name: from-kafka
    source: kafka://localhost:9092/minio-events
    function: thumbs
    starting_position: trim_horizon
    on_failure: dlq
    object_notifications: true
  - name: from-a-stream
    source: redis://localhost:6379/0?stream=minio-events
    function: thumbs
    object_notifications: {field: document}
"""


def load(tmp_path: Path, mappings: str) -> list[MappingConfig]:
    path = tmp_path / "eventwire.yaml"
    path.write_text(HEAD + mappings)
    return load_config(path).mappings


def test_the_example_loads(tmp_path: Path) -> None:
    amqp, kafka, redis = load(tmp_path, ISSUE_EXAMPLE)
    assert amqp.object_notifications is not None
    assert amqp.object_notifications.filter.events == ("s3:ObjectCreated:*",)
    assert (amqp.object_notifications.prefix, amqp.object_notifications.suffix) == (
        "incoming/",
        ".jpg",
    )
    # `true`: every created and removed object, as a webhook notification's default.
    assert kafka.object_notifications is not None
    assert kafka.object_notifications.events == ("s3:ObjectCreated:*", "s3:ObjectRemoved:*")
    assert kafka.starting_position == "trim_horizon" and kafka.on_failure == "dlq"
    assert redis.object_notifications is not None
    assert redis.object_notifications.field_name == "document"
    assert amqp.object_notifications.field_name == "body"
    # Nothing waits for a batch window: each S3 record is an invocation of its own.
    assert amqp.batch_window_s == kafka.batch_window_s == redis.batch_window_s == 0.0


def test_false_is_a_plain_mapping(tmp_path: Path) -> None:
    [mapping] = load(
        tmp_path,
        "  - {name: m, source: 'kafka://k:9092/t', function: thumbs,\n"
        "     object_notifications: false}\n",
    )
    assert mapping.object_notifications is None and mapping.batch_window_s == 0.5


def test_a_plain_mapping_keeps_its_hash() -> None:
    """Rows registered before the key existed keep their hash (a new one resets the desired
    state a user set with `mappings disable`)."""
    mapping = MappingConfig.model_validate(
        {"name": "m", "source": "kafka://k:9092/t", "function": "f"}
    )
    before = json.dumps(
        {k: v for k, v in mapping.model_dump(mode="json", by_alias=True).items()
         if k not in ("object_notifications", "endpoint_url", "region")},
        sort_keys=True,
    )  # fmt: skip
    assert _hash(mapping) == hashlib.sha256(before.encode()).hexdigest()
    with_notifications = mapping.model_copy(update={"object_notifications": None})
    assert _hash(with_notifications) == _hash(mapping)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (
            "batch_size: 10",
            "F:7: mappings.0.batch_size: does not apply with object_notifications: every S3 "
            "record is an invocation of its own",
        ),
        ("batch_window: 1s", "F:7: mappings.0.batch_window: does not apply with"),
        (
            "max_retry_attempts: 2",
            "F:7: mappings.0.max_retry_attempts: does not apply with object_notifications: its "
            "invocations are retried by the function's own policy (functions.thumbs.retry)",
        ),
        ("max_record_age: 1h", "F:7: mappings.0.max_record_age: does not apply with"),
        ("bisect_on_error: true", "F:7: mappings.0.bisect_on_error: does not apply with"),
        (
            "report_batch_item_failures: true",
            "F:7: mappings.0.report_batch_item_failures: does not apply with "
            "object_notifications: there is no batch",
        ),
        (
            "max_concurrency: 4",
            "F:7: mappings.0.max_concurrency: does not apply with object_notifications: S3 "
            "records run in parallel, as many at once as the function allows "
            "(functions.thumbs.reserved_concurrency)",
        ),
    ],
)
def test_batch_keys_are_refused_by_name(tmp_path: Path, options: str, message: str) -> None:
    body = (
        "  - name: m\n"
        "    source: amqp://h:5672/%2F?queue=q\n"
        "    function: thumbs\n"
        f"    {options}\n"
        "    object_notifications: {suffix: .jpg}\n"
    )
    assert message in _error(tmp_path, body)


@pytest.mark.parametrize(
    ("notifications", "message"),
    [
        (
            "{events: ['s3:ObjectMade:*']}",
            "F:7: mappings.0.object_notifications.events: not an S3 event type: 's3:ObjectMade:*'",
        ),
        ("{events: []}", "mappings.0.object_notifications.events: expected at least one"),
        (
            "{sufix: .jpg}",
            "mappings.0.object_notifications.sufix: unknown key 'sufix'; expected one of: "
            "events, field, prefix, suffix",
        ),
        (
            "{field: body}",
            "F:7: mappings.0.object_notifications.field: applies to redis stream sources only",
        ),
        ("all", "mappings.0.object_notifications: expected `true` or keys events, prefix"),
    ],
)
def test_mistakes_in_the_block_name_their_key(
    tmp_path: Path, notifications: str, message: str
) -> None:
    body = (
        "  - name: m\n"
        "    source: kafka://k:9092/t\n"
        "    function: thumbs\n"
        f"    object_notifications: {notifications}\n"
    )
    assert message in _error(tmp_path, body)


def _error(tmp_path: Path, body: str) -> str:
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, body)
    return str(caught.value).replace(str(tmp_path / "eventwire.yaml"), "F")
