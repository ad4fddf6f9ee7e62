"""``kafka://host:9092[,host2:9092]/topic`` — produce to a Kafka topic.

The producer waits for every in-sync replica (``acks=all``) and is
idempotent, so its own retries never write a record twice. A broker that
cannot give an idempotent producer an id is reported as such;
``?idempotent=false`` turns idempotence off for it (``acks=all`` stays).
Headers are Kafka record headers (UTF-8). aiokafka is imported only when the
first message is sent.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, unquote, urlsplit

from broker.destinations.external import (
    DeliveryFailed,
    ExternalDestination,
    Message,
    require_module,
)

if TYPE_CHECKING:
    from broker.config.models import DestinationConfig

_FORM = "kafka://host:9092[,host2:9092]/topic[?idempotent=false]"


def parse(uri: str) -> ExternalDestination:
    parts = urlsplit(uri)
    servers = parts.netloc.rsplit("@", 1)[-1]
    topic = unquote(parts.path.lstrip("/"))
    if not servers:
        raise ValueError(f"destination {uri!r} has no bootstrap server; expected {_FORM}")
    if not topic or "/" in topic:
        raise ValueError(f"destination {uri!r} names no topic; expected {_FORM}")
    query = dict(parse_qsl(parts.query, keep_blank_values=True))
    idempotent = query.pop("idempotent", "true").lower()
    if idempotent not in ("true", "false") or query:
        raise ValueError(f"destination {uri!r}: unexpected query; expected {_FORM}")
    require_module("aiokafka", "kafka", "kafka")
    return ExternalDestination(
        uri,
        "kafka",
        {"servers": servers, "topic": topic, "idempotent": idempotent == "true"},
    )


class KafkaSender:
    """One producer per destination, started on first use."""

    def __init__(self, destination: ExternalDestination, timeout_s: float) -> None:
        self.servers: str = destination.options["servers"]
        self.topic: str = destination.options["topic"]
        self.idempotent: bool = destination.options["idempotent"]
        self.timeout_ms = max(1000, int(timeout_s * 1000))
        self._producer: Any = None
        self._lock = asyncio.Lock()

    async def _ready(self) -> Any:
        async with self._lock:
            if self._producer is not None:
                return self._producer
            from aiokafka import AIOKafkaProducer
            from aiokafka.errors import KafkaConnectionError, KafkaError

            producer = AIOKafkaProducer(
                bootstrap_servers=self.servers.split(","),
                acks="all",
                enable_idempotence=self.idempotent,
                request_timeout_ms=self.timeout_ms,
            )
            try:
                await producer.start()
            except KafkaConnectionError as exc:
                await producer.stop()
                raise DeliveryFailed("Destination.ConnectionError", _text(exc)) from None
            except KafkaError as exc:
                await producer.stop()
                hint = _IDEMPOTENCE_HINT if self.idempotent else ""
                raise DeliveryFailed("Destination.KafkaError", _text(exc) + hint) from None
            except BaseException:
                await producer.stop()
                raise
            self._producer = producer
            return producer

    async def send(self, message: Message) -> str:
        from aiokafka.errors import KafkaError

        producer = await self._ready()
        headers = [(name, value.encode()) for name, value in message.headers.items()]
        try:
            metadata = await producer.send_and_wait(self.topic, message.body, headers=headers)
        except KafkaError as exc:
            await self.reset()
            raise DeliveryFailed("Destination.KafkaError", _text(exc)) from None
        return f"{metadata.topic}/{metadata.partition}@{metadata.offset}"

    async def reset(self) -> None:
        producer, self._producer = self._producer, None
        if producer is not None:
            await producer.stop()

    async def close(self) -> None:
        async with self._lock:
            await self.reset()


_IDEMPOTENCE_HINT = " (a broker that cannot start idempotent producers needs ?idempotent=false)"


def _text(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def sender(
    destination: ExternalDestination, settings: DestinationConfig, environ: Mapping[str, str]
) -> KafkaSender:
    return KafkaSender(destination, settings.timeout_s)
