"""The Redis queue: the hot path in Redis, the history in the SQL store.

Unfinished invocations, their order, leases, lanes, delays and running counts
live in Redis and change only through the Lua scripts of
:mod:`broker.queue.redis_lua`, so every step is atomic. What happened —
invocations, attempts, dead letters — is appended to a Redis stream inside the
same scripts and copied into the SQL store in batches by
:class:`~broker.history.writer.HistoryWriter` (in a child process of
``serve``: :mod:`broker.history.process`), so ``eventwire invocations``
and ``eventwire dlq`` read the same tables whichever queue ran the invocation.

Idle dispatchers subscribe to a wake-up channel that enqueues publish to;
delayed invocations and lease expiries are waited for exactly, by their time.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any, cast
from urllib.parse import urlsplit, urlunsplit

import orjson
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.commands.core import AsyncScript
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError
from sqlalchemy.ext.asyncio import AsyncEngine

from broker.config.settings import Settings
from broker.errors import UsageError
from broker.models import (
    Enqueued,
    FunctionLimits,
    Invocation,
    Lease,
    NewInvocation,
    Origin,
    Settlement,
    State,
)
from broker.queue import redis_lua
from broker.queue.sql import Clock, utcnow
from broker.queue.wakeup import Wakeup
from broker.store.history_rows import enqueue_event, from_us, settle_event, us

log = logging.getLogger("eventwire.queue")

MAX_LEASE = 1000
"""At most this many invocations per lease call (bounded script arguments)."""
GUARD_WINDOW_S = 60
"""How long an enqueue without an idempotency key is remembered by its id, so
that a command retried after a lost reply (the client retries for a few
seconds) does not enqueue it twice. Short, because at 10,000 invocations/s each
second of window is ~1 MB of Redis memory."""
INLINE_PAYLOAD = 2048
"""Payloads up to this many bytes live in the invocation's hash and pass through the
scripts; larger ones are stored out of line (see :mod:`broker.queue.redis_lua`)."""


def connect(url: str) -> aioredis.Redis:
    """A client that retries commands across dropped connections with backoff."""
    return aioredis.Redis.from_url(
        url,
        retry=Retry(ExponentialBackoff(cap=2.0, base=0.05), retries=5),
        retry_on_error=[RedisConnectionError, RedisTimeoutError, OSError],
        health_check_interval=30,
        socket_connect_timeout=5,
    )


class RedisQueue:
    """``InvocationQueue`` on Redis (see :mod:`broker.queue.base` for the contract)."""

    def __init__(
        self,
        client: aioredis.Redis,
        *,
        prefix: str = "eventwire",
        clock: Clock = utcnow,
        idempotency_window_s: float = 24 * 3600,
        account_concurrency: int | None = None,
    ) -> None:
        self.client = client
        self.prefix = key_prefix(prefix)
        self.clock = clock
        self.idempotency_window_s = int(idempotency_window_s)
        self.account_concurrency = account_concurrency
        self._wakeup = Wakeup(clock)
        self._enqueue = client.register_script(redis_lua.ENQUEUE)
        self._lease = client.register_script(redis_lua.LEASE)
        self._settle = client.register_script(redis_lua.SETTLE)
        self._extend = client.register_script(redis_lua.EXTEND)
        self._release = client.register_script(redis_lua.RELEASE)
        self._next_due = client.register_script(redis_lua.NEXT_DUE)

    async def check(self, url: str) -> None:
        """Fail with a one-line error naming ``url`` when Redis cannot be reached."""
        try:
            await self.client.ping()
        except (RedisError, OSError) as exc:
            raise UsageError(f"cannot use the Redis queue at {url}: {exc}") from None

    # ------------------------------------------------------------ enqueue

    def _item_args(self, item: NewInvocation, now: datetime, aside: Aside) -> list[Any]:
        first = item.first_enqueued_at or now
        available = item.available_at or now
        out_of_line = len(item.payload) > INLINE_PAYLOAD
        if out_of_line:
            aside.append((f"{self.prefix}p:{item.id}", item.payload))
        return [
            item.id,
            item.function,
            b"" if out_of_line else item.payload,
            item.request_id or item.id,
            item.origin.value,
            item.lane or "",
            item.idempotency_key or "",
            "1" if item.sync else "0",
            us(first),
            us(available),
            orjson.dumps(dict(item.source)) if item.source else b"",
            "1" if out_of_line else "0",
            enqueue_event(item, first, available, now, out_of_line=out_of_line),
        ]

    async def _run(self, script: AsyncScript, args: list[Any], aside: Aside) -> Any:
        """``script``'s answer; the out-of-line payloads in ``aside`` are written first, in
        the same transaction, so the script sees them and they exist only with it."""
        if not aside:
            return await script(args=args)
        while True:
            async with self.client.pipeline(transaction=True) as pipe:
                pipe.mset(dict(aside))  # one command, however many payloads
                pipe.evalsha(script.sha, 0, *args)
                try:
                    return (await pipe.execute())[-1]
                except NoScriptError:  # Redis restarted or its scripts were flushed
                    await self.client.script_load(script.script)

    async def enqueue(self, batch: Sequence[NewInvocation]) -> list[Enqueued]:
        if not batch:
            return []
        now = self.clock()
        args: list[Any] = [
            self.prefix,
            us(now),
            self.idempotency_window_s,
            GUARD_WINDOW_S,
            len(batch),
        ]
        aside: Aside = []
        for item in batch:
            args.extend(self._item_args(item, now, aside))
        answer = await self._run(self._enqueue, args, aside)
        self._wakeup.set()
        return [Enqueued(answer[j].decode(), bool(answer[j + 1])) for j in range(0, len(answer), 2)]

    # ------------------------------------------------------------ lease

    async def lease(
        self,
        n: int,
        owner: str,
        functions: Mapping[str, FunctionLimits],
        now: datetime,
    ) -> list[Lease]:
        self._wakeup.clear()
        if n <= 0 or not functions:
            return []
        args: list[Any] = [
            self.prefix,
            us(now),
            min(n, MAX_LEASE),
            uuid.uuid4().hex[:12],
            -1 if self.account_concurrency is None else self.account_concurrency,
            len(functions),
        ]
        for name, limits in functions.items():
            reserved, at_most = limits.reserved_concurrency, limits.at_most
            args.extend(
                (
                    name,
                    int(limits.lease_s * 1_000_000),
                    -1 if reserved is None else reserved,
                    -1 if at_most is None else at_most,
                )
            )
        rows, _throttles = await self._lease(args=args)
        return await self._leases(rows)

    async def _leases(self, rows: Sequence[Sequence[Any]]) -> list[Lease]:
        """Lease rows of the scripts as leases, their out-of-line payloads read."""
        apart = [row[0].decode() for row in rows if row[16] == b"1"]
        payloads = await read_payloads(self.client, self.prefix, apart) if apart else {}
        return [_lease(row, payloads.get(row[0].decode())) for row in rows]

    # ------------------------------------------------------------ extend / release

    async def extend(self, expiries: Mapping[str, datetime]) -> set[str]:
        if not expiries:
            return set()
        args: list[Any] = [self.prefix, us(self.clock()), len(expiries)]
        for token, when in expiries.items():
            args.extend((token, us(when)))
        return {t.decode() for t in await self._extend(args=args)}

    async def release(self, tokens: Sequence[str]) -> None:
        if tokens:
            await self._release(args=[self.prefix, us(self.clock()), *tokens])

    # ------------------------------------------------------------ settle

    async def settle(
        self, settlements: Sequence[Settlement], now: datetime
    ) -> dict[str, Lease | None]:
        if not settlements:
            return {}
        now_us = us(now)
        args: list[Any] = [
            self.prefix,
            now_us,
            self.idempotency_window_s,
            GUARD_WINDOW_S,
            len(settlements),
        ]
        aside: Aside = []
        for s in settlements:
            retry_at = us(s.retry_at) if s.state is State.PENDING and s.retry_at else now_us
            payload = s.payload
            if payload is None:
                replaces = "0"
            elif len(payload) > INLINE_PAYLOAD:
                replaces = "2"
                aside.append((f"{self.prefix}p:{s.lease_token}", payload))
                payload = b""
            else:
                replaces = "1"
            chain_us = int(s.chain_lease_s * 1_000_000) if s.chain_lease_s else 0
            header = (
                f"{s.state.value}|{retry_at}|{s.function_errors}|{s.system_errors}"
                f"|{len(s.enqueue)}|{replaces}|{chain_us}"
            )
            args.extend(
                (
                    s.lease_token,
                    header,
                    settle_event(s, now, payload_out_of_line=replaces == "2"),
                    payload or b"",
                    b"" if s.source is None else orjson.dumps(dict(s.source)),
                )
            )
            for item in s.enqueue:
                args.extend(self._item_args(item, now, aside))
        answers, chained, more = await self._run(self._settle, args, aside)
        if more:  # else every settlement chained its lane's next, or changed nothing else
            self._wakeup.set()
        held: dict[str, Lease | None] = {t.decode(): None for t in answers}
        if chained:
            leases = await self._leases(chained[1::2])
            for token, lease in zip(chained[::2], leases, strict=True):
                held[token.decode()] = lease
        return held

    # ------------------------------------------------------------ lanes

    async def running(self, function: str, now: datetime) -> int:
        # The count the lease script keeps: leases that expired are taken off it by the
        # next lease, so it may trail a dead process's by up to a lease.
        count = await self.client.hget(f"{self.prefix}c", function)
        return int(count or 0)

    async def lane_depths(self, lanes: Sequence[str]) -> dict[str, int]:
        if not lanes:
            return {}
        async with self.client.pipeline(transaction=False) as pipe:
            for lane in lanes:
                pipe.llen(f"{self.prefix}l:{lane}")
            counts = await pipe.execute()
        return {lane: int(n) for lane, n in zip(lanes, counts, strict=True)}

    # ------------------------------------------------------------ wait / close

    async def start_listening(self) -> None:
        """Subscribe to wake-ups; returns once subscribed (or after 10 s; it goes on)."""
        await self._wakeup.listen(self._listen, "eventwire-redis-wake")

    async def _listen(self) -> None:
        failures = 0
        while True:
            pubsub = self.client.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(self.prefix + "wake")
                self._wakeup.listening.set()
                self._wakeup.set()  # work may have come while we were not listening
                failures = 0
                async for _message in pubsub.listen():
                    self._wakeup.set()
            except (RedisError, OSError) as exc:
                failures += 1
                delay = min(0.1 * 2**failures, 5.0)
                log.warning("queue: Redis wake-up channel lost (%s); retry in %.1fs", exc, delay)
                await asyncio.sleep(delay)
            finally:
                self._wakeup.listening.clear()
                with contextlib.suppress(Exception):
                    await pubsub.aclose()  # type: ignore[no-untyped-call,unused-ignore]  # untyped before redis-py 8.2

    async def next_due(self, functions: Mapping[str, FunctionLimits]) -> datetime | None:
        """When the earliest delayed invocation or lease comes due."""
        value = await self._next_due(args=[self.prefix, *functions])
        return from_us(value) if value else None

    async def wait(self, functions: Mapping[str, FunctionLimits], timeout_s: float) -> None:
        await self._wakeup.wait(lambda: self.next_due(functions), timeout_s)

    async def close(self) -> None:
        await self._wakeup.close()


@asynccontextmanager
async def open_redis_queue(
    settings: Settings,
    engine: AsyncEngine,
    *,
    clock: Clock = utcnow,
) -> AsyncIterator[RedisQueue]:
    """The Redis queue at ``settings.queue_url``. A serving process copies its history
    into the SQL store while it is open (:func:`broker.history.process.copying_history`)."""
    url = settings.effective_queue_url
    client = connect(url)
    queue = RedisQueue(
        client,
        prefix=settings.queue_prefix,
        clock=clock,
        idempotency_window_s=settings.idempotency_window_s,
        account_concurrency=settings.account_concurrency,
    )
    try:
        await queue.check(redact(url))
        await queue.start_listening()
        yield queue
    finally:
        await queue.close()
        await client.aclose()


async def stored_payloads(
    client: aioredis.Redis, prefix: str, ids: Sequence[str]
) -> dict[str, bytes]:
    """The out-of-line payloads Redis holds for invocations ``ids`` (those it holds none
    for are left out)."""
    found = cast(list[bytes | None], await client.mget([f"{prefix}p:{id}" for id in ids]))
    return {id: payload for id, payload in zip(ids, found, strict=True) if payload is not None}


async def read_payloads(
    client: aioredis.Redis, prefix: str, ids: Sequence[str]
) -> dict[str, bytes]:
    """The out-of-line payloads of invocations ``ids`` (empty for one Redis lost)."""
    found = await stored_payloads(client, prefix, ids)
    for id in ids:
        if id not in found:  # only if Redis lost data: an empty payload, said loudly
            log.error("queue: the payload of invocation %s is missing", id)
    return {id: found.get(id, b"") for id in ids}


async def queued_payloads(settings: Settings, ids: Sequence[str]) -> dict[str, bytes]:
    """The out-of-line payloads that the Redis queue of ``settings`` holds for unfinished
    invocations ``ids`` (their history rows hold empty ones until they finish); an id
    it holds none for is left out: it finished meanwhile, or is not there."""
    url = settings.effective_queue_url
    client = connect(url)
    try:
        return await stored_payloads(client, key_prefix(settings.queue_prefix), ids)
    except (RedisError, OSError) as exc:
        raise UsageError(
            f"cannot read payloads from the Redis queue at {redact(url)}: {exc}"
        ) from None
    finally:
        await client.aclose()


def key_prefix(queue_prefix: str) -> str:
    """What every Redis key of the queue named ``queue_prefix`` starts with."""
    return queue_prefix.rstrip(":") + ":"


def redact(url: str) -> str:
    """``url`` without its password."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
    return urlunsplit(parts._replace(netloc=netloc))


def _text(value: bytes | None) -> str:
    return value.decode() if value else ""


Aside = list[tuple[str, bytes]]
"""Out-of-line payloads to write with a script: (key, payload)."""


def _lease(row: Sequence[Any], out_of_line: bytes | None) -> Lease:
    (
        id,
        token,
        function,
        attempts,
        expires,
        payload,
        request_id,
        origin,
        lane,
        key,
        sync,
        function_errors,
        system_errors,
        first,
        available,
        source,
        _apart,
    ) = row
    invocation = Invocation(
        id=id.decode(),
        request_id=request_id.decode(),
        function=function.decode(),
        payload=payload if out_of_line is None else out_of_line,
        origin=Origin(origin.decode()),
        lane=_text(lane) or None,
        idempotency_key=_text(key) or None,
        sync=sync == b"1",
        state=State.RUNNING,
        attempts=int(attempts),
        function_errors=int(function_errors),
        system_errors=int(system_errors),
        first_enqueued_at=from_us(first),
        available_at=from_us(available),
        source=orjson.loads(source) if source else {},
    )
    return Lease(token=token.decode(), invocation=invocation, expires_at=from_us(expires))


__all__ = ["RedisQueue", "connect"]
