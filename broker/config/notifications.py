"""S3-style object notifications in ``eventwire.yaml``: where object events come from.

```yaml
object_notifications:
  - name: uploads
    source: webhook                   # MinIO / Ceph RGW POST to /notifications/uploads
    token_env: UPLOADS_WEBHOOK_TOKEN  # the shared token, from this environment variable
                                      # (a list of variables while a token is rotated)
    events: ["s3:ObjectCreated:*"]
    prefix: incoming/
    suffix: .jpg
    function: make_thumbnail
  - name: dropbox
    source: dir:///srv/dropbox        # a local directory, watched
    function: ingest_file
```

Every matching record becomes one invocation of ``function`` with Lambda's
S3 event (:mod:`broker.events.s3`). Checks that need the whole file (the
function exists, names are unique, keys fit the source) are made by
:func:`check_object_notifications`, so each error names file:line: key.

The same documents arriving through a RabbitMQ, Kafka or Redis Streams
mapping are read by that mapping's ``object_notifications:`` block
(:class:`MappingNotifications`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import PurePosixPath
from typing import Annotated

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator

from broker.config.durations import parse_duration
from broker.config.errors import config_error
from broker.config.variables import VariableName
from broker.events.s3 import DEFAULT_EVENTS, S3Filter, check_event_patterns

KeyPath = tuple[str, ...]
Seconds = Annotated[float, BeforeValidator(parse_duration)]

WEBHOOK = "webhook"
DIR_SCHEME = "dir://"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
BODY_FIELD = "body"
"""The stream entry field a mapping reads a document from (where Eventwire's own Redis
destinations write a message)."""


class ObjectNotificationConfig(BaseModel):
    """One source of object events and the function it invokes."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    name: str
    source: str
    function: str
    token_env: tuple[VariableName, ...] | None = None
    """The variables holding the tokens senders may present: one, or several while one
    token replaces another (``[UPLOADS_TOKEN, UPLOADS_TOKEN_NEXT]``)."""
    events: tuple[str, ...] = DEFAULT_EVENTS
    prefix: str = ""
    suffix: str = ""
    # dir:// only: a file is complete once its size and mtime held still this long.
    settle_s: Seconds = Field(1.0, alias="settle", gt=0, le=3600)
    # dir:// only: the bucket name in the events (default: the notification's name).
    bucket: str | None = None

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not _NAME.match(value):
            raise ValueError(f"name {value!r} must be 1-64 letters, digits, '_', '-' or '.'")
        return value

    @field_validator("source")
    @classmethod
    def _source(cls, value: str) -> str:
        if value == WEBHOOK:
            return value
        if not value.startswith(DIR_SCHEME) or not value[len(DIR_SCHEME) :].startswith("/"):
            raise ValueError(
                f"expected `webhook` or `dir:///absolute/path` (three slashes), got {value!r}"
            )
        return value

    @field_validator("events")
    @classmethod
    def _events(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return _checked_events(value)

    @field_validator("token_env", mode="before")
    @classmethod
    def _token_env(cls, value: object) -> object:
        """One variable, or a list of them while a token rotates."""
        names = (value,) if isinstance(value, str) else value
        if isinstance(names, list | tuple) and not names:
            raise ValueError("expected an environment variable name, or a list of them")
        return names

    @property
    def is_webhook(self) -> bool:
        return self.source == WEBHOOK

    @property
    def directory(self) -> str:
        """The watched directory of a ``dir://`` source."""
        return str(PurePosixPath(self.source[len(DIR_SCHEME) :]))

    @property
    def filter(self) -> S3Filter:
        return S3Filter(self.events, self.prefix, self.suffix)

    @property
    def bucket_name(self) -> str:
        return self.bucket or self.name


class MappingNotifications(BaseModel):
    """A mapping's ``object_notifications:``: its records are S3 notification documents.

    ```yaml
    mappings:
      - name: uploads-from-minio
        source: amqp://guest:guest@localhost:5672/%2F?queue=minio-events
        function: make_thumbnail
        object_notifications:
          events: ["s3:ObjectCreated:*"]
          prefix: incoming/
          suffix: .jpg
    ```

    ``object_notifications: {}`` (or ``true``) takes every object-created and
    -removed record. A Redis stream entry holds its document in one field,
    ``body`` unless ``field`` names another.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    events: tuple[str, ...] = DEFAULT_EVENTS
    prefix: str = ""
    suffix: str = ""
    entry_field: str | None = Field(None, alias="field", min_length=1)

    @field_validator("events")
    @classmethod
    def _events(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return _checked_events(value)

    @property
    def filter(self) -> S3Filter:
        return S3Filter(self.events, self.prefix, self.suffix)

    @property
    def field_name(self) -> str:
        """The stream entry field holding the document."""
        return self.entry_field or BODY_FIELD


def mapping_notifications(value: object) -> object:
    """``true`` is ``{}`` (every created and removed object); ``false`` is none."""
    if value is True:
        return {}
    if value is False:
        return None
    if value is not None and not isinstance(value, Mapping):
        raise ValueError(
            f"expected `true` or keys events, prefix, suffix (and field for a redis "
            f"stream), got {value!r}"
        )
    return value


def _checked_events(value: tuple[str, ...]) -> tuple[str, ...]:
    if not value:
        raise ValueError("expected at least one event type, e.g. s3:ObjectCreated:*")
    check_event_patterns(value)
    return value


def check_object_notifications(
    notifications: list[ObjectNotificationConfig],
    functions: Mapping[str, object],
    source: str,
    lines: Mapping[KeyPath, int],
) -> None:
    """The checks that need the whole file; a :class:`ConfigError` names file:line: key."""
    seen: dict[str, int] = {}
    for index, notification in enumerate(notifications):
        problem = _problem(notification, index, functions, seen)
        if problem is not None:
            path, message = problem
            raise config_error(source, lines, path, message)
        seen[notification.name] = index


def _problem(
    notification: ObjectNotificationConfig,
    index: int,
    functions: Mapping[str, object],
    seen: dict[str, int],
) -> tuple[KeyPath, str] | None:
    at = ("object_notifications", str(index))
    given = notification.model_fields_set
    if notification.name in seen:
        return (*at, "name"), (
            f"name {notification.name!r} is already used by object_notifications."
            f"{seen[notification.name]}"
        )
    if notification.function not in functions:
        known = ", ".join(sorted(functions)) or "none"
        return (*at, "function"), (
            f"unknown function {notification.function!r}; configured functions: {known}"
        )
    if notification.is_webhook:
        if notification.token_env is None:
            return (*at, "token_env"), (
                "a webhook needs `token_env: VARIABLE`, the environment variable holding "
                "the token senders must present"
            )
        for key in ("settle_s", "bucket"):
            if key in given:
                name = "settle" if key == "settle_s" else key
                return (*at, name), f"`{name}` applies to dir:// sources only"
    elif "token_env" in given:
        return (*at, "token_env"), "a dir:// source takes no token (only webhooks do)"
    return None
