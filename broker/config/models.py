"""The models of ``eventwire.yaml``: what functions exist and how they run.

They check the shape of each key; :mod:`broker.loading` reads the file into them
and runs the checks that need another concept (destinations, invoker keys,
schedule expressions).
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from broker.config.api import ApiConfig
from broker.config.durations import parse_duration, parse_size
from broker.config.function_urls import FunctionUrlConfig
from broker.config.mappings import MappingConfig
from broker.config.notifications import ObjectNotificationConfig
from broker.config.observability import MetricsConfig, TracingConfig
from broker.config.variables import VariableName

Seconds = Annotated[float, BeforeValidator(parse_duration)]
Bytes = Annotated[int, BeforeValidator(parse_size)]

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


Destination = str
"""A destination URI (``function:NAME``, ``dlq``, ``amqp://…`` …); :mod:`broker.loading`
checks it with :func:`broker.destinations.parse_destination`."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class Backoff(_Model):
    """Delay before retry *n*: ``initial * multiplier**(n-1)``, capped at ``max``, jittered."""

    initial_s: Seconds = Field(60.0, alias="initial", gt=0)
    multiplier: float = Field(2.0, ge=1.0)
    max_s: Seconds = Field(300.0, alias="max", gt=0)
    jitter: float = Field(0.1, ge=0.0, le=1.0)


class RetryPolicy(_Model):
    """How an asynchronous invocation is retried; Lambda's defaults.

    ``max_attempts`` counts every attempt, the first included: the default of
    3 is Lambda's "2 retries".
    """

    max_attempts: int = Field(3, ge=1, le=1000)
    max_event_age_s: Seconds = Field(6 * 3600.0, alias="max_event_age", gt=0)
    backoff: Backoff = Backoff()


class FunctionConfig(_Model):
    """One function: which code runs, how, and what happens to its results."""

    handler: str | None = None
    invoker: str = "python"
    description: str = ""
    timeout_s: Seconds = Field(3.0, alias="timeout", gt=0, le=15 * 60)
    memory_mb: Annotated[int, BeforeValidator(lambda v: _megabytes(v))] = Field(
        128,
        alias="memory",
        ge=128,
        le=10_240,  # Lambda's range
    )
    reserved_concurrency: int | None = Field(None, ge=0)
    retry: RetryPolicy = RetryPolicy()
    on_success: Destination | None = None
    on_failure: Destination | None = None
    dead_letter: Destination | None = None  # a queue, topic, stream or webhook, besides `dlq`
    environment: dict[str, str] = Field(default_factory=dict)
    function_url: FunctionUrlConfig | None = None
    # process and http invokers (which keys each kind takes: broker/invoker_config.py)
    command: list[str] | None = None
    concurrency: int | None = Field(None, ge=1, le=10_000)
    warm: int = Field(0, ge=0, le=10_000)
    idle_timeout_s: Seconds = Field(300.0, alias="idle_timeout", gt=0)
    url: Annotated[str | None, BeforeValidator(lambda v: _endpoint_url(v))] = None
    headers: dict[str, str] = Field(default_factory=dict)
    tls_verify: bool = True

    @model_validator(mode="after")
    def _handler_for_python(self) -> FunctionConfig:
        if self.invoker == "python" and not self.handler:
            raise ValueError("a python function needs `handler: package.module:function`")
        return self

    def config_hash(self) -> str:
        data = json.dumps(self.model_dump(mode="json"), sort_keys=True)
        return hashlib.sha256(data.encode()).hexdigest()


class RetryOverride(_Model):
    """A schedule's changes to its function's retry policy; what is not given stays."""

    max_attempts: int | None = Field(None, ge=1, le=1000)
    max_event_age_s: Seconds | None = Field(None, alias="max_event_age", gt=0)
    backoff: Backoff | None = None


class ScheduleConfig(_Model):
    """One schedule: when it fires, what it invokes, and how it handles lateness and overlap."""

    expression: str
    timezone: str = "UTC"
    function: str
    description: str = ""
    payload: dict[str, Any] | None = None
    flexible_window_s: Seconds = Field(0.0, alias="flexible_window", ge=0, le=24 * 3600)
    catch_up: Literal["none", "latest", "all"] = "none"
    catch_up_window_s: Seconds = Field(3600.0, alias="catch_up_window", gt=0)
    overlap: Literal["allow", "skip", "buffer_one"] = "allow"
    retry: RetryOverride | None = None
    on_success: Destination | None = None
    on_failure: Destination | None = None
    after_completion: Literal["none", "delete"] = "none"
    event_source: Literal["aws.events", "eventwire.scheduler"] = "aws.events"

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        check_timezone(value)
        return value

    def config_hash(self) -> str:
        data = json.dumps(self.model_dump(mode="json"), sort_keys=True)
        return hashlib.sha256(data.encode()).hexdigest()


def check_timezone(name: str) -> None:
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(
            f"unknown time zone {name!r}; expected an IANA name like UTC, "
            "Europe/Berlin or America/New_York"
        ) from None


class DeliveryRetry(RetryPolicy):
    """How a delivery to an external destination is retried: for hours, from 1 s to 5 min."""

    max_attempts: int = Field(30, ge=1, le=1000)
    backoff: Backoff = Backoff(initial_s=1.0, multiplier=2.0, max_s=300.0, jitter=0.1)


class DestinationConfig(_Model):
    """Settings of one external destination (``destinations:``, keyed by its URI)."""

    timeout_s: Seconds = Field(10.0, alias="timeout", gt=0, le=15 * 60)
    retry: DeliveryRetry = DeliveryRetry()
    # webhooks only
    signing_secret_env: VariableName | None = None
    headers: dict[str, str] = Field(default_factory=dict)
    tls_verify: bool = True
    # sqs:// and sns:// only: where the client connects, instead of botocore's chain
    endpoint_url: str | None = None
    region: str | None = None

    @field_validator("endpoint_url")
    @classmethod
    def _endpoint(cls, value: str | None) -> str | None:
        if value is not None and not _ENDPOINT.match(value):
            raise ValueError(f"expected http://HOST[:PORT] or https://HOST[:PORT], got {value!r}")
        return value

    @field_validator("region")
    @classmethod
    def _region(cls, value: str | None) -> str | None:
        if value is not None and not _REGION.match(value):
            raise ValueError(f"expected a region like eu-west-1, got {value!r}")
        return value


_ENDPOINT = re.compile(r"^https?://[^/\s?#]+/?$")
_REGION = re.compile(r"^[a-z]{2}(-[a-z]+)+-\d+$")


class Limits(_Model):
    """Payload limits applied at enqueue."""

    async_payload_bytes: Bytes = Field(256 * 1024, alias="async_payload", gt=0)
    sync_payload_bytes: Bytes = Field(6 * 1024 * 1024, alias="sync_payload", gt=0)
    response_bytes: Bytes = Field(6 * 1024 * 1024, alias="response", gt=0)


class ProjectConfig(_Model):
    """The whole ``eventwire.yaml``."""

    functions: dict[str, FunctionConfig] = Field(default_factory=dict)
    schedules: dict[str, ScheduleConfig] = Field(default_factory=dict)
    limits: Limits = Limits()
    mappings: list[MappingConfig] = Field(default_factory=list)
    destinations: dict[str, DestinationConfig] = Field(default_factory=dict)
    object_notifications: list[ObjectNotificationConfig] = Field(default_factory=list)
    metrics: MetricsConfig = MetricsConfig()
    api: ApiConfig = ApiConfig()
    tracing: TracingConfig | None = None

    @field_validator("functions", "schedules")
    @classmethod
    def _names(cls, items: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        kind = "function" if info.field_name == "functions" else "schedule"
        for name in items:
            if not NAME.match(name):
                raise ValueError(
                    f"{kind} name {name!r} must be 1-64 letters, digits, '_', '-' or '.'"
                )
        return items


def _endpoint_url(value: object) -> object:
    """The http invoker's ``url``; a mapping there is a function URL given the wrong key."""
    if isinstance(value, dict):
        raise ValueError(
            "`url` is the http invoker's endpoint; a function URL is "
            "`function_url: {auth: NONE | AWS_IAM, cors: {...}}`"
        )
    return value


_MEGABYTES = re.compile(r"(\d+)\s*(mb|mib|gb|gib)?", re.IGNORECASE)


def _megabytes(value: object) -> int:
    """Memory in MB as Lambda counts it (``512``, ``512MB``, ``1GB``; 1 GB = 1024 MB)."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    match = _MEGABYTES.fullmatch(str(value).strip())
    if match is None:
        raise ValueError(f"expected a memory size like 128MB or 1GB, got {value!r}")
    unit = (match.group(2) or "mb").lower()
    return int(match.group(1)) * (1024 if unit.startswith("g") else 1)
