"""``amqp://user:pass@host:5672/vhost?exchange=NAME&routing_key=KEY`` — publish to RabbitMQ.

Each message is published persistent, with publisher confirms, and
``mandatory``: a message no queue is bound to receive is returned by the
broker and counts as a failed delivery (retried), never silently dropped.
``exchange=`` (empty) is the default exchange, where the routing key is the
queue's name. Headers (a dead letter's ``RequestID``, ``ErrorCode``,
``ErrorMessage``) are AMQP message headers; the message id is the delivery's id.
aio-pika is imported only when the first message is sent.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from broker.aio.waits import close_within
from broker.destinations.external import (
    DeliveryFailed,
    ExternalDestination,
    Message,
    require_module,
)

if TYPE_CHECKING:
    from broker.config.models import DestinationConfig

_FORM = "amqp://user:password@host:5672/vhost?exchange=NAME&routing_key=KEY"


def parse(uri: str) -> ExternalDestination:
    parts = urlsplit(uri)
    if not parts.hostname:
        raise ValueError(f"destination {uri!r} has no host; expected {_FORM}")
    query = dict(parse_qsl(parts.query, keep_blank_values=True))
    if "exchange" not in query:
        raise ValueError(f"destination {uri!r} names no exchange; expected {_FORM}")
    exchange = query.pop("exchange")
    routing_key = query.pop("routing_key", "")
    if not exchange and not routing_key:
        raise ValueError(
            f"destination {uri!r}: the default exchange (exchange=) needs routing_key=QUEUE"
        )
    require_module("aio_pika", "rabbitmq", "amqp")
    connection_url = urlunsplit(parts._replace(query=urlencode(query), fragment=""))
    return ExternalDestination(
        uri,
        "amqp",
        {"url": connection_url, "exchange": exchange, "routing_key": routing_key},
    )


class AmqpSender:
    """One connection and one confirming channel per destination, opened on first use."""

    def __init__(self, destination: ExternalDestination) -> None:
        self.url: str = destination.options["url"]
        self.exchange_name: str = destination.options["exchange"]
        self.routing_key: str = destination.options["routing_key"]
        self._connection: Any = None
        self._exchange: Any = None
        self._lock = asyncio.Lock()

    async def _ready(self) -> Any:
        async with self._lock:
            if self._exchange is not None and not self._exchange.channel.is_closed:
                return self._exchange
            await self.reset()
            import aio_pika

            self._connection = await aio_pika.connect(self.url)
            channel = await self._connection.channel(publisher_confirms=True, on_return_raises=True)
            if self.exchange_name:
                self._exchange = await channel.get_exchange(self.exchange_name, ensure=True)
            else:
                self._exchange = channel.default_exchange
            return self._exchange

    async def send(self, message: Message) -> str:
        import aio_pika
        from aio_pika.exceptions import ChannelNotFoundEntity, PublishError

        try:
            exchange = await self._ready()
            await exchange.publish(
                aio_pika.Message(
                    message.body,
                    content_type="application/json",
                    delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                    message_id=message.id or None,
                    headers=dict(message.headers),
                ),
                routing_key=self.routing_key,
                mandatory=True,
            )
        except ChannelNotFoundEntity as exc:
            await self.reset()
            raise DeliveryFailed("Destination.NotFound", str(exc)) from None
        except PublishError:
            raise DeliveryFailed(
                "Destination.Unroutable",
                f"no queue is bound to exchange {self.exchange_name!r} "
                f"with routing key {self.routing_key!r}",
            ) from None
        except (OSError, aio_pika.exceptions.AMQPError) as exc:
            await self.reset()
            raise DeliveryFailed("Destination.ConnectionError", str(exc) or repr(exc)) from None
        return f"published to exchange {self.exchange_name!r} ({self.routing_key})"

    async def reset(self) -> None:
        connection, self._connection, self._exchange = self._connection, None, None
        if connection is not None and not connection.is_closed:
            await close_within(connection.close(), 5)

    async def close(self) -> None:
        async with self._lock:
            await self.reset()


def sender(
    destination: ExternalDestination, settings: DestinationConfig, environ: Mapping[str, str]
) -> AmqpSender:
    return AmqpSender(destination)
