"""``redis://host:6379/0?stream=NAME[&maxlen=N]`` — append to a Redis stream.

Each message is one ``XADD`` entry: the message in the field ``body`` and
each header (a dead letter's ``RequestID``, ``ErrorCode``, ``ErrorMessage``)
as a field of its own. ``maxlen`` trims the stream to about that many
entries (``MAXLEN ~``). redis-py is imported only when the first message is sent.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from broker.destinations.external import (
    DeliveryFailed,
    ExternalDestination,
    Message,
    require_module,
)

if TYPE_CHECKING:
    from broker.config.models import DestinationConfig

_FORM = "redis://host:6379/0?stream=NAME[&maxlen=N]"
BODY_FIELD = "body"


def parse(uri: str) -> ExternalDestination:
    parts = urlsplit(uri)
    if not parts.hostname:
        raise ValueError(f"destination {uri!r} has no host; expected {_FORM}")
    query = dict(parse_qsl(parts.query, keep_blank_values=True))
    stream = query.pop("stream", "")
    if not stream:
        raise ValueError(f"destination {uri!r} names no stream; expected {_FORM}")
    maxlen_text = query.pop("maxlen", None)
    maxlen = None
    if maxlen_text is not None:
        if not maxlen_text.isdigit() or int(maxlen_text) < 1:
            raise ValueError(
                f"destination {uri!r}: maxlen should be a positive number, got {maxlen_text!r}"
            )
        maxlen = int(maxlen_text)
    require_module("redis", "redis", "redis")
    connection_url = urlunsplit(parts._replace(query=urlencode(query), fragment=""))
    return ExternalDestination(
        uri, "redis", {"url": connection_url, "stream": stream, "maxlen": maxlen}
    )


class RedisStreamSender:
    """One connection pool per destination, created on first use."""

    def __init__(self, destination: ExternalDestination, timeout_s: float) -> None:
        self.url: str = destination.options["url"]
        self.stream: str = destination.options["stream"]
        self.maxlen: int | None = destination.options["maxlen"]
        self.timeout_s = timeout_s
        self._client: Any = None
        self._lock = asyncio.Lock()

    async def _ready(self) -> Any:
        async with self._lock:
            if self._client is None:
                import redis.asyncio

                self._client = redis.asyncio.Redis.from_url(
                    self.url, socket_connect_timeout=self.timeout_s
                )
            return self._client

    async def send(self, message: Message) -> str:
        from redis.exceptions import ConnectionError, RedisError, TimeoutError

        client = await self._ready()
        fields = {BODY_FIELD: message.body, **message.headers}
        try:
            entry = await client.xadd(self.stream, fields, maxlen=self.maxlen, approximate=True)
        except (ConnectionError, TimeoutError, OSError) as exc:
            raise DeliveryFailed("Destination.ConnectionError", str(exc) or repr(exc)) from None
        except RedisError as exc:
            raise DeliveryFailed("Destination.RedisError", str(exc) or repr(exc)) from None
        return f"{self.stream} {entry.decode() if isinstance(entry, bytes) else entry}"

    async def reset(self) -> None:
        """The pool reconnects by itself; nothing to drop."""

    async def close(self) -> None:
        async with self._lock:
            client, self._client = self._client, None
            if client is not None:
                await client.aclose()


def sender(
    destination: ExternalDestination, settings: DestinationConfig, environ: Mapping[str, str]
) -> RedisStreamSender:
    return RedisStreamSender(destination, settings.timeout_s)
