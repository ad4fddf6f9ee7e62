"""The ``Poller`` protocol, the clock pollers run on, and the registry that finds them by name.

A poller reads a source (a Kafka topic, a queue, the clock …), shapes each
event and enqueues it through the :class:`~broker.queue.base.InvocationQueue`.
``broker`` never imports ``pollers``: :func:`create_pollers` looks each kind a
configuration uses up in :data:`POLLERS` and imports it only then.
"""

from __future__ import annotations

import asyncio
import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Protocol

from sqlalchemy.ext.asyncio import AsyncEngine

from broker.aio.waits import wait_set
from broker.config.roles import ROLE_OF_POLLER
from broker.config.settings import Settings
from broker.errors import UsageError
from broker.observability.metrics import Metrics
from broker.observability.tracing import NO_TRACING, Tracing
from broker.queue.base import InvocationQueue

if TYPE_CHECKING:
    from broker.config.models import ProjectConfig

POLLERS: dict[str, str] = {
    "schedule": "pollers.schedule.poller:create",
    "s3_webhook": "pollers.s3.webhook:create",
    "s3_dir": "pollers.s3.directory:create",
    "kafka": "pollers.kafka:create",
    "amqp": "pollers.rabbitmq:create",
    "redis": "pollers.redis_streams:create",
    "sqs": "pollers.sqs.poller:create",
    "lambda_api": "broker.api.lambda_api:create",
}
EXTRAS = {"kafka": "kafka", "amqp": "rabbitmq", "redis": "redis", "sqs": "aws"}
"""The ``eventwire[...]`` extra a poller kind's transport library comes with."""


class Poller(Protocol):
    """Runs until stopped; ``stop()`` only asks, ``run()`` returns once it has."""

    name: str

    async def start(self) -> None:
        """Get ready (register what it polls, connect); the service is serving after this."""
        ...

    async def run(self) -> None: ...

    def stop(self) -> None: ...


class Timer(Protocol):
    """The time a poller goes by: what time it is, and waiting until a time or a stop.

    The system clock in production; tests drive a fake one (or a faster one)
    so that nothing waits for wall-clock minutes.
    """

    def now(self) -> datetime: ...

    async def sleep_until(self, when: datetime, stop: asyncio.Event) -> None:
        """Return at ``when`` or as soon as ``stop`` is set, whichever comes first."""
        ...


class SystemTimer:
    def now(self) -> datetime:
        return datetime.now(UTC)

    async def sleep_until(self, when: datetime, stop: asyncio.Event) -> None:
        delay = (when - self.now()).total_seconds()
        if delay > 0 and not stop.is_set():
            await wait_set(stop, delay)


@dataclass(frozen=True, slots=True)
class PollerContext:
    """What a poller gets from the service that runs it."""

    settings: Settings
    config: ProjectConfig
    engine: AsyncEngine
    queue: InvocationQueue
    owner: str
    timer: Timer
    metrics: Metrics = field(default_factory=Metrics)
    tracing: Tracing = NO_TRACING
    """Whether to read the trace context records come with (only when it is on)."""


PollerFactory = Callable[[PollerContext], Poller]


def load(target: str) -> Any:
    """The object named ``package.module:attribute``, imported now."""
    module_name, _, attr = target.partition(":")
    return getattr(importlib.import_module(module_name), attr)


def kinds_in(config: ProjectConfig, settings: Settings) -> list[str]:
    """The poller kinds a configuration and the settings use (the Lambda API is a listen
    address, not part of the configuration)."""
    kinds = ["schedule"] if config.schedules else []
    notifications = config.object_notifications
    kinds += ["s3_webhook"] if any(n.is_webhook for n in notifications) else []
    kinds += ["s3_dir"] if any(not n.is_webhook for n in notifications) else []
    kinds += sorted({mapping.kind.value for mapping in config.mappings})
    return kinds + (["lambda_api"] if settings.api_listen else [])


def create_pollers(context: PollerContext, roles: frozenset[str]) -> list[Poller]:
    """The pollers the configuration needs, of those that belong to ``roles``."""
    factories: list[PollerFactory] = []
    for kind in kinds_in(context.config, context.settings):
        if ROLE_OF_POLLER[kind] not in roles:
            continue
        try:
            factories.append(load(POLLERS[kind]))
        except ModuleNotFoundError as exc:
            extra = EXTRAS.get(kind, kind)
            raise UsageError(
                f"{kind} mappings need the {extra} extra: pip install 'eventwire[{extra}]' ({exc})"
            ) from None
    return [factory(context) for factory in factories]
