"""Asynchronous SQS and SNS clients (aiobotocore), configured as botocore configures them.

The endpoint comes from ``endpoint_url`` when a mapping or destination gives one, else
from botocore's chain (``AWS_ENDPOINT_URL_SQS`` / ``AWS_ENDPOINT_URL``, the profile's
``endpoint_url``); the region from ``region``, else the one the queue or topic name says,
else the chain (``AWS_REGION``, ``AWS_DEFAULT_REGION``, the profile), else ``us-east-1``;
the credentials from the chain only (environment, profiles, instance roles), never from
the config file.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, Literal

from aiobotocore.config import AioConfig
from aiobotocore.session import get_session
from botocore.exceptions import BotoCoreError, ClientError

AWS_ERRORS: tuple[type[Exception], ...] = (BotoCoreError, ClientError, OSError)
"""What a call to SQS or SNS raises when it fails: an answer with an error code, or none
(the endpoint is unreachable, the credentials are missing)."""
MISSING_QUEUE_CODES = frozenset(
    {"AWS.SimpleQueueService.NonExistentQueue", "QueueDoesNotExist", "NonExistentQueue"}
)

DEFAULT_REGION = "us-east-1"


@dataclass(frozen=True, slots=True)
class Endpoint:
    """Where a client connects: ``None`` fields come from botocore's chain."""

    endpoint_url: str | None = None
    region: str | None = None


def region_of(endpoint: Endpoint, named: str | None = None) -> str:
    """The region a client for ``endpoint`` uses, when ``named`` is what the ARN or URL says."""
    if endpoint.region:
        return endpoint.region
    if named:
        return named
    configured = get_session().get_config_variable("region")
    return str(configured) if configured else DEFAULT_REGION


def error_code(exc: BaseException) -> str | None:
    """The error code of an answer (``AWS.SimpleQueueService.NonExistentQueue`` …), if any."""
    if isinstance(exc, ClientError):
        code = exc.response.get("Error", {}).get("Code")
        return str(code) if code else None
    return None


def describe(exc: BaseException) -> str:
    """One line about a failed call: the answer's code and message, or the client's error."""
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        return f"{error.get('Code', 'error')}: {error.get('Message', '')}".rstrip(": ")
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


@asynccontextmanager
async def client(
    service: Literal["sqs", "sns"],
    endpoint: Endpoint,
    *,
    named_region: str | None = None,
    max_pool_connections: int = 10,
    read_timeout: float = 60.0,
    max_attempts: int = 3,
) -> AsyncIterator[Any]:
    """An open aiobotocore client for ``service``; closed on exit. ``client.meta.endpoint_url``
    says where it connects (see :meth:`.names.Queue.url`).

    ``read_timeout`` must exceed the longest long poll (20 s). ``max_attempts`` counts each
    call's tries, botocore's retries of throttling and connection errors included (1: the
    caller retries)."""
    config = AioConfig(
        max_pool_connections=max_pool_connections,
        read_timeout=read_timeout,
        connect_timeout=10,
        retries={"mode": "standard", "max_attempts": max_attempts},
    )
    session = get_session()
    async with session.create_client(
        service,
        region_name=region_of(endpoint, named_region),
        endpoint_url=endpoint.endpoint_url,
        config=config,
    ) as opened:
        yield opened
