"""Large payloads on the Redis queue live out of line (``p:<id>``): they are written with
the script that makes their invocation, and leave Redis once the history has them."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import pytest
from redis.asyncio import Redis

from broker.config.settings import Settings
from broker.history import writer as redis_history
from broker.ids import new_id
from broker.models import FunctionLimits, NewInvocation, State
from broker.queue.redis import RedisQueue, queued_payloads, read_payloads
from tests.contract.test_queue_contract import BIG, lease, new, stored_payload
from tests.support.queue_harness import Harness, redis_harness, settlement
from tests.support.services import REDIS_URL


@pytest.fixture
async def h(tmp_path: Path) -> AsyncIterator[Harness]:
    async with redis_harness(tmp_path) as harness:
        yield harness


def queue_of(h: Harness) -> RedisQueue:
    assert isinstance(h.queue, RedisQueue)
    return h.queue


async def payload_keys(h: Harness) -> list[bytes]:
    q = queue_of(h)
    return [key async for key in q.client.scan_iter(match=f"{q.prefix}p:*")]


async def test_a_finished_invocation_leaves_no_payload_behind(h: Harness) -> None:
    items = [new(payload=BIG + bytes([n])) for n in range(3)]
    await h.queue.enqueue(items)
    assert len(await payload_keys(h)) == 3
    held = await lease(h.queue, h)
    assert sorted(x.invocation.payload for x in held) == sorted(i.payload for i in items)
    await h.queue.settle([settlement(x, State.SUCCEEDED) for x in held], h.clock.now)
    # Finished, but the history does not have it yet: the payload stays for it.
    assert len(await payload_keys(h)) == 3
    assert await stored_payload(h, items[0].id) == items[0].payload
    assert await payload_keys(h) == []


async def test_a_payload_replaced_in_line_leaves_redis_at_once(h: Harness) -> None:
    """A retry that gives the invocation a small payload (a bisected batch) frees the large
    one it had: nothing reads it again."""
    item = new(payload=BIG)
    await h.queue.enqueue([item])
    [held] = await lease(h.queue, h)
    small = b'{"half": 1}'
    await h.queue.settle(
        [settlement(held, State.PENDING, retry_at=h.clock.now, payload=small)], h.clock.now
    )
    assert await payload_keys(h) == []
    [again] = await lease(h.queue, h)
    assert again.invocation.payload == small
    await h.queue.settle([settlement(again, State.SUCCEEDED)], h.clock.now)
    assert await stored_payload(h, item.id) == small


async def test_a_duplicate_by_key_leaves_no_payload_behind(h: Harness) -> None:
    first = new(payload=BIG, idempotency_key="k")
    again = new(payload=BIG, idempotency_key="k")
    await h.queue.enqueue([first])
    [answer] = await h.queue.enqueue([again])
    assert (answer.id, answer.created) == (first.id, False)
    assert await payload_keys(h) == [f"{queue_of(h).prefix}p:{first.id}".encode()]


async def test_a_retried_enqueue_keeps_its_own_payload(h: Harness) -> None:
    """A call retried after a lost reply finds its own invocation made: the payload stays."""
    item = new(payload=BIG)
    await h.queue.enqueue([item])
    [answer] = await h.queue.enqueue([item])
    assert not answer.created
    [held] = await lease(h.queue, h)
    assert held.invocation.payload == BIG


async def test_a_settle_that_lost_its_lease_leaves_no_payload_behind(h: Harness) -> None:
    await h.queue.enqueue([new()])
    [held] = await lease(h.queue, h)
    h.clock.advance(11)  # the lease runs out; another dispatcher takes the invocation
    [taken] = await lease(h.queue, h)
    follow_on = NewInvocation(id=new_id(), function="g", payload=BIG)
    late = settlement(held, State.PENDING, retry_at=h.clock.now, payload=BIG, enqueue=(follow_on,))
    assert await h.queue.settle([late], h.clock.now) == {}
    assert await payload_keys(h) == []
    await h.queue.settle([settlement(taken, State.SUCCEEDED)], h.clock.now)
    assert await lease(h.queue, h, fns={"g": FunctionLimits(10)}) == []


async def test_big_payloads_survive_a_flush_of_the_scripts(h: Harness) -> None:
    """Scripts run inside a transaction with the payloads; Redis may have lost them."""
    await queue_of(h).client.script_flush()
    item = new(payload=BIG)
    [answer] = await h.queue.enqueue([item])
    assert answer.created
    [held] = await lease(h.queue, h)
    assert held.invocation.payload == BIG


async def test_a_succeeded_payload_not_kept_is_not_read_and_still_removed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``keep_succeeded_payloads=False``: the writer does not read the payload of an invocation
    that succeeded (its history keeps an empty one), and removes it from Redis all the same."""
    read: list[str] = []

    async def spy(client: Redis, prefix: str, ids: Sequence[str]) -> dict[str, bytes]:
        read.extend(ids)
        return await read_payloads(client, prefix, ids)

    monkeypatch.setattr(redis_history, "read_payloads", spy)  # the writer's reads only
    async with redis_harness(tmp_path, keep_succeeded_payloads=False) as h:
        early, ok, failed = (new(payload=BIG + bytes([n])) for n in range(3))
        await h.queue.enqueue([early])
        assert await stored_payload(h, early.id) == b""  # pending: left in Redis
        assert read == []
        await h.queue.enqueue([ok, failed])
        held = {x.invocation.id: x for x in await lease(h.queue, h)}
        await h.queue.settle(
            [
                settlement(held[early.id], State.SUCCEEDED),
                # A new payload of its own, also out of line (``p:<token>`` becomes ``p:<id>``).
                settlement(held[ok.id], State.SUCCEEDED, payload=BIG[::-1]),
                settlement(held[failed.id], State.FAILED),
            ],
            h.clock.now,
        )
        assert len(await payload_keys(h)) == 3
        read.clear()
        assert await stored_payload(h, ok.id) == b""
        assert read == [failed.id]
        assert await payload_keys(h) == []
        assert await stored_payload(h, early.id) == b""
        assert await stored_payload(h, failed.id) == failed.payload


async def test_an_unfinished_payload_is_copied_with_the_final_state_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The history row of an unfinished invocation holds an empty payload while Redis holds
    it (``eventwire invocations show`` reads it there); the final state brings it along,
    read once, whether its event says the payload is out of line or not."""
    read: list[str] = []

    async def spy(client: Redis, prefix: str, ids: Sequence[str]) -> dict[str, bytes]:
        read.extend(ids)
        return await read_payloads(client, prefix, ids)

    monkeypatch.setattr(redis_history, "read_payloads", spy)
    async with redis_harness(tmp_path) as h:
        big, small = new(payload=BIG), new(payload=b'{"small": 1}')
        await h.queue.enqueue([big, small])
        held = {x.invocation.id: x for x in await lease(h.queue, h)}
        # A retry: ``small`` runs again with a payload of its own, out of line.
        await h.queue.settle(
            [settlement(held[small.id], State.PENDING, retry_at=h.clock.now, payload=BIG[::-1])],
            h.clock.now,
        )
        assert await stored_payload(h, big.id) == b""
        assert await stored_payload(h, small.id) == b""
        assert read == []
        settings = Settings(queue_url=REDIS_URL, queue_prefix=queue_of(h).prefix)
        assert await queued_payloads(settings, [big.id, small.id]) == {
            big.id: BIG,
            small.id: BIG[::-1],
        }

        [again] = await lease(h.queue, h)
        await h.queue.settle(
            [settlement(held[big.id], State.SUCCEEDED), settlement(again, State.FAILED)],
            h.clock.now,
        )
        assert await stored_payload(h, big.id) == BIG
        assert await stored_payload(h, small.id) == BIG[::-1]
        assert sorted(read) == sorted([big.id, small.id])
        assert await payload_keys(h) == []
        assert await queued_payloads(settings, [big.id, small.id]) == {}
