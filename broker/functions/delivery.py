"""The built-in delivery functions and the ``deliver`` invoker that runs them.

Every external destination a configuration names (``on_success``,
``on_failure``, ``dead_letter`` of functions, schedules and mappings) gets
one delivery function (:func:`delivery_functions`): a function like any
other to the queue and the dispatcher, with the destination's own timeout
and retry policy (``destinations:`` in ``eventwire.yaml``, or the defaults
of :class:`~broker.config.models.DestinationConfig`). Its invoker publishes the
message through a :class:`Sender` — one per destination, connected on first
use, kept for the life of the process and closed at shutdown.

A failed delivery is a function error named ``Destination.<reason>`` whose
message says which destination failed and why; each one is a
``destination_delivery_failures`` count (``eventwire destinations ls``).
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import json
import os
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Protocol

from broker.config.errors import config_error
from broker.config.models import DestinationConfig, FunctionConfig
from broker.destinations import SCHEMES, parse_destination
from broker.destinations.external import (
    DeliveryFailed,
    ExternalDestination,
    Message,
    redacted,
    unwrap,
)
from broker.functions.invoker import InvokeRequest, InvokerInitError
from broker.models import FunctionError, Outcome, Success

if TYPE_CHECKING:
    from broker.config.models import ProjectConfig

INVOKER = "deliver"


class Sender(Protocol):
    """Publishes messages to one target over a connection it keeps."""

    async def send(self, message: Message) -> str:
        """Publish ``message``, return once the target confirmed it; answers a short detail
        (offset, entry id, status). Raises :class:`DeliveryFailed`."""
        ...

    async def reset(self) -> None:
        """Drop the connection after a failure that may have broken it; the next send reconnects."""
        ...

    async def close(self) -> None: ...


class SenderFactory(Protocol):
    def __call__(
        self,
        destination: ExternalDestination,
        settings: DestinationConfig,
        environ: Mapping[str, str],
    ) -> Sender: ...


class DeliveryFunctionConfig(FunctionConfig):
    """A delivery function's configuration: a function's, plus its destination's settings."""

    destination: DestinationConfig = DestinationConfig()


def external_uris(config: ProjectConfig) -> dict[str, list[str]]:
    """Every external destination URI the configuration sends to, with where it is named."""
    found: dict[str, list[str]] = {}
    holders: list[tuple[str, object]] = [
        *((f"functions.{n}", f) for n, f in config.functions.items()),
        *((f"schedules.{n}", s) for n, s in config.schedules.items()),
        *((f"mappings.{i}", m) for i, m in enumerate(config.mappings)),
    ]
    for where, holder in holders:
        for key in ("on_success", "on_failure", "dead_letter"):
            uri = getattr(holder, key, None)
            if isinstance(uri, str) and isinstance(parse_destination(uri), ExternalDestination):
                found.setdefault(uri, []).append(f"{where}.{key}")
    return found


def delivery_functions(config: ProjectConfig) -> dict[str, DeliveryFunctionConfig]:
    """The built-in function delivering to each external destination ``config`` uses."""
    functions = {}
    for uri in external_uris(config):
        settings = config.destinations.get(uri, DestinationConfig())
        destination = parse_destination(uri)
        assert isinstance(destination, ExternalDestination)
        functions[destination.delivery_function] = DeliveryFunctionConfig(
            invoker=INVOKER,
            description=f"delivers to {redacted(uri)}",
            url=uri,
            timeout_s=settings.timeout_s,
            retry=settings.retry,
            destination=settings,
        )
    return functions


def served_functions(config: ProjectConfig) -> dict[str, FunctionConfig]:
    """The configured functions and the built-in ones delivering to external destinations."""
    return {**config.functions, **delivery_functions(config)}


def check_destinations(
    config: ProjectConfig, source: str, lines: Mapping[tuple[str, ...], int]
) -> None:
    """Raise a :class:`ConfigError` naming the key of a destination setting that does not fit."""

    def fail(path: tuple[str, ...], message: str) -> None:
        raise config_error(source, lines, path, message)

    for name, function in config.functions.items():
        if function.invoker == INVOKER:
            fail(
                ("functions", name, "invoker"),
                f"the {INVOKER} invoker is built in (it delivers to destinations); "
                "expected python, process or http",
            )
        uri = function.dead_letter
        if uri is not None and not isinstance(parse_destination(uri), ExternalDestination):
            fail(
                ("functions", name, "dead_letter"),
                f"expected a queue, topic, stream or webhook URI (sqs://, sns://, amqp://, "
                f"kafka://, redis://, https://), got {uri!r}; failed events always land in the "
                "built-in DLQ too",
            )
    used = external_uris(config)
    for uri, settings in config.destinations.items():
        path = ("destinations", uri)
        try:
            destination = parse_destination(uri)
        except ValueError as exc:
            fail(path, str(exc))
        if not isinstance(destination, ExternalDestination):
            fail(path, f"expected an external destination URI, got {uri!r}")
        assert isinstance(destination, ExternalDestination)
        if uri not in used:
            fail(path, "no function, schedule or mapping sends to this destination")
        for key, text in _misplaced_keys(destination, settings):
            fail((*path, key), text)


_KEYS_OF = {
    ("http",): (("signing_secret_env", "headers", "tls_verify"), "webhooks (http:// and https://)"),
    ("sqs", "sns"): (("endpoint_url", "region"), "SQS queues and SNS topics (sqs://, sns://)"),
}


def _misplaced_keys(
    destination: ExternalDestination, settings: DestinationConfig
) -> Iterator[tuple[str, str]]:
    """The keys of ``settings`` that only another kind of destination takes, with why."""
    for kinds, (keys, which) in _KEYS_OF.items():
        if destination.kind not in kinds:
            for key in keys:
                if key in settings.model_fields_set:
                    yield key, f"only {which} take this key"


def sender_factory(uri: str) -> SenderFactory:
    """The ``sender`` of the module handling ``uri``'s scheme."""
    module = importlib.import_module(SCHEMES[uri.split(":", 1)[0]])
    factory: SenderFactory = module.sender
    return factory


class DeliveryInvoker:
    """Runs a delivery function: each invocation publishes its message to the destination."""

    def __init__(self, name: str, config: FunctionConfig) -> None:
        self.name = name
        self.uri = config.url or ""
        self.shown = redacted(self.uri)
        self.settings = DestinationConfig()
        if isinstance(config, DeliveryFunctionConfig):
            self.settings = config.destination
        self._sender: Sender | None = None
        self._init_error = "the delivery invoker was not started"

    async def start(self) -> None:
        try:
            destination = parse_destination(self.uri)
            if not isinstance(destination, ExternalDestination):
                raise ValueError(f"{self.uri!r} is not an external destination")
            self._sender = sender_factory(self.uri)(destination, self.settings, os.environ)
        except (ImportError, ValueError, KeyError) as exc:
            reason = exc.args[0] if isinstance(exc, KeyError) else exc
            self._init_error = f"destination {self.shown}: {reason}"
            raise InvokerInitError(self._init_error) from None

    async def invoke(self, request: InvokeRequest) -> Outcome:
        if self._sender is None:
            return FunctionError("Destination.NotReady", self._init_error)
        try:
            message = unwrap(request.payload, request.invocation_id)
        except ValueError as exc:
            return FunctionError("Destination.BadPayload", f"delivery to {self.shown}: {exc}")
        remaining_s = (request.deadline - datetime.now(UTC)).total_seconds()
        try:
            async with asyncio.timeout(max(remaining_s, 0.001)):
                detail = await self._sender.send(message)
        except TimeoutError:
            await self._reset()
            return FunctionError(
                "Destination.Timeout",
                f"delivery to {self.shown}: not confirmed within {self.settings.timeout_s:g}s",
            )
        except DeliveryFailed as exc:
            return FunctionError(
                exc.error_type,
                f"delivery to {self.shown} failed: {exc}",
                retry_after_s=exc.retry_after_s,
            )
        except Exception as exc:
            await self._reset()
            return FunctionError(
                "Destination.Error",
                f"delivery to {self.shown} failed: {type(exc).__name__}: {exc}",
            )
        return Success(json.dumps({"destination": self.shown, "delivered": detail}).encode())

    async def _reset(self) -> None:
        if self._sender is not None:
            with contextlib.suppress(Exception):  # the connection is being dropped anyway
                await self._sender.reset()

    async def close(self) -> None:
        if self._sender is not None:
            await self._sender.close()
