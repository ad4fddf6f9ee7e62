"""The contract every ``InvocationQueue`` backend passes unchanged.

Each test runs against every backend in ``QUEUES``; a new backend is added by
teaching the ``h`` fixture to build it, and nothing else.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from broker.ids import new_id
from broker.models import (
    Enqueued,
    FunctionLimits,
    Lease,
    NewInvocation,
    Origin,
    State,
)
from broker.queue.base import InvocationQueue
from broker.queue.postgres import PostgresQueue
from broker.queue.redis import RedisQueue
from broker.queue.sql import SqlQueue
from broker.store.schema import attempts, dead_letters, invocations
from tests.support.queue_harness import Harness, dead_letter, harness, settlement

F = {"f": FunctionLimits(lease_s=10)}
QUEUES = ["sqlite", "postgres", "redis"]


@pytest.fixture(params=QUEUES)
async def h(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Harness]:
    async with harness(request.param, tmp_path) as value:
        yield value


def new(function: str = "f", **kw: object) -> NewInvocation:
    kw.setdefault("payload", b"{}")
    return NewInvocation(id=new_id(), function=function, **kw)  # type: ignore[arg-type]


async def lease(
    q: InvocationQueue,
    h: Harness,
    n: int = 10,
    fns: dict[str, FunctionLimits] = F,
    owner: str = "a",
) -> list[Lease]:
    return await q.lease(n, owner, fns, h.clock.now)


async def test_enqueued_invocation_is_leased_once(h: Harness) -> None:
    item = new(payload=b'{"x": 1}')
    assert await h.queue.enqueue([item]) == [Enqueued(item.id, True)]
    [got] = await lease(h.queue, h)
    assert got.invocation.id == item.id
    assert got.invocation.payload == b'{"x": 1}'
    assert got.invocation.attempts == 1
    assert got.invocation.request_id == item.id
    assert got.expires_at == h.clock.now + timedelta(seconds=10)
    assert await lease(h.queue, h) == []


async def test_enqueue_is_idempotent_by_key_per_function(h: Harness) -> None:
    first = new(idempotency_key="k")
    [a] = await h.queue.enqueue([first])
    [b] = await h.queue.enqueue([new(idempotency_key="k")])
    [c] = await h.queue.enqueue([new("g", idempotency_key="k")])
    assert a.created and not b.created and c.created
    assert b.id == first.id
    mixed = [new(idempotency_key="k"), new(), new(idempotency_key="k2")]
    answers = await h.queue.enqueue(mixed)
    assert [x.created for x in answers] == [False, True, True]
    assert answers[0].id == first.id
    assert len(await lease(h.queue, h, 10)) == 3  # k, the keyless one, k2


async def test_leases_oldest_first_and_only_named_functions(h: Harness) -> None:
    items = [new() for _ in range(5)] + [new("other")]
    await h.queue.enqueue(items)
    got = await lease(h.queue, h, 3)
    assert [x.invocation.id for x in got] == [i.id for i in items[:3]]
    rest = await lease(h.queue, h, 10)
    assert [x.invocation.id for x in rest] == [i.id for i in items[3:5]]


async def test_next_due_is_the_earliest_retry_or_lease_expiry_of_the_functions(
    h: Harness,
) -> None:
    """What an idle dispatcher waits for: due-now invocations (they wait behind a lane's
    head, or for concurrency) and other functions' invocations do not count."""
    queue = h.queue
    assert isinstance(queue, SqlQueue | RedisQueue)
    later, latest = h.clock.now + timedelta(seconds=30), h.clock.now + timedelta(seconds=60)
    g = {"g": FunctionLimits(lease_s=10)}
    assert await queue.next_due(F) is None
    await queue.enqueue([new(available_at=latest), new("g", available_at=later), new()])
    assert await queue.next_due(F) == latest
    assert await queue.next_due(g) == later
    [held] = await lease(queue, h)
    assert held.expires_at < latest
    assert await queue.next_due(F) == held.expires_at
    await queue.settle([settlement(held, State.SUCCEEDED)], h.clock.now)
    assert await queue.next_due(F) == latest


async def test_delayed_invocation_waits_for_its_time(h: Harness) -> None:
    await h.queue.enqueue([new(available_at=h.clock.now + timedelta(seconds=30))])
    assert await lease(h.queue, h) == []
    h.clock.advance(31)
    assert len(await lease(h.queue, h)) == 1


async def test_expired_lease_is_leased_again_and_old_token_cannot_settle(h: Harness) -> None:
    await h.queue.enqueue([new()])
    [first] = await lease(h.queue, h, owner="dead")
    h.clock.advance(9)
    assert await lease(h.queue, h, owner="b") == []
    h.clock.advance(2)
    [second] = await lease(h.queue, h, owner="b")
    assert second.invocation.id == first.invocation.id
    assert second.invocation.attempts == 2
    held = await h.queue.settle([settlement(first, State.SUCCEEDED)], h.clock.now)
    assert held == {}
    assert await h.queue.settle([settlement(second, State.SUCCEEDED)], h.clock.now) == {
        second.token: None
    }


async def test_extend_keeps_a_long_run_leased(h: Harness) -> None:
    await h.queue.enqueue([new()])
    [held] = await lease(h.queue, h)
    h.clock.advance(8)
    assert await h.queue.extend({held.token: h.clock.now + timedelta(seconds=10)}) == {held.token}
    h.clock.advance(8)  # past the first expiry, within the extension
    assert await lease(h.queue, h, owner="b") == []
    assert await h.queue.extend({"not-a-token": h.clock.now}) == set()


async def test_settle_success_records_the_attempt(h: Harness) -> None:
    await h.queue.enqueue([new()])
    [held] = await lease(h.queue, h)
    await h.queue.settle([settlement(held, State.SUCCEEDED, result=b'"ok"')], h.clock.now)
    h.clock.advance(3600)
    assert await lease(h.queue, h) == []
    await h.recorded()
    async with h.engine.connect() as conn:
        rows = (await conn.execute(select(attempts))).all()
    assert [(r.invocation_id, r.number, r.status) for r in rows] == [
        (held.invocation.id, 1, "success")
    ]


async def test_retry_is_available_at_its_time_with_counters(h: Harness) -> None:
    await h.queue.enqueue([new()])
    [held] = await lease(h.queue, h)
    retry_at = h.clock.now + timedelta(seconds=60)
    await h.queue.settle(
        [settlement(held, State.PENDING, retry_at=retry_at, function_errors=1)], h.clock.now
    )
    h.clock.advance(59)
    assert await lease(h.queue, h) == []
    h.clock.advance(2)
    [again] = await lease(h.queue, h)
    assert again.invocation.attempts == 2
    assert again.invocation.function_errors == 1
    assert again.invocation.request_id == held.invocation.request_id


async def test_settle_enqueues_follow_ons_and_dead_letters_atomically(h: Harness) -> None:
    await h.queue.enqueue([new()])
    [held] = await lease(h.queue, h)
    follow_on = new("g", origin=Origin.DESTINATION, idempotency_key=f"d:{held.invocation.id}")
    letter = dead_letter(held, h)
    await h.queue.settle(
        [settlement(held, State.FAILED, enqueue=(follow_on,), dead_letter=letter)], h.clock.now
    )
    [g] = await lease(h.queue, h, fns={"g": FunctionLimits(10)})
    assert g.invocation.id == follow_on.id
    assert g.invocation.origin is Origin.DESTINATION
    await h.recorded()
    async with h.engine.connect() as conn:
        rows = (await conn.execute(select(dead_letters))).all()
    assert [(r.invocation_id, r.condition) for r in rows] == [
        (held.invocation.id, "RetriesExhausted")
    ]


async def test_lane_runs_one_at_a_time_in_order(h: Harness) -> None:
    a1, a2, b1, free = new(lane="A"), new(lane="A"), new(lane="B"), new()
    await h.queue.enqueue([a1, a2, b1, free])
    got = await lease(h.queue, h)
    assert {x.invocation.id for x in got} == {a1.id, b1.id, free.id}
    [l_a1] = [x for x in got if x.invocation.id == a1.id]
    # A retry keeps the lane blocked until it is done.
    await h.queue.settle(
        [settlement(l_a1, State.PENDING, retry_at=h.clock.now + timedelta(seconds=5))],
        h.clock.now,
    )
    assert await lease(h.queue, h) == []
    h.clock.advance(6)
    [retried] = await lease(h.queue, h)
    assert retried.invocation.id == a1.id
    await h.queue.settle([settlement(retried, State.SUCCEEDED)], h.clock.now)
    [next_in_lane] = await lease(h.queue, h)
    assert next_in_lane.invocation.id == a2.id


async def test_reserved_concurrency_holds_across_queues(h: Harness) -> None:
    limited = {"f": FunctionLimits(lease_s=10, reserved_concurrency=2)}
    await h.queue.enqueue([new() for _ in range(5)])
    first = await lease(h.queue, h, fns=limited)
    assert len(first) == 2
    other = h.other()
    try:
        assert await lease(other, h, fns=limited, owner="b") == []
        await h.queue.settle([settlement(first[0], State.SUCCEEDED)], h.clock.now)
        assert len(await lease(other, h, fns=limited, owner="b")) == 1
    finally:
        await other.close()


async def test_account_concurrency_holds_across_queues_and_functions(h: Harness) -> None:
    fns = {"f": FunctionLimits(lease_s=10), "g": FunctionLimits(lease_s=10)}
    await h.queue.enqueue([new("f"), new("g"), new("f"), new("g")])
    limited = h.make_limited(3)
    other = h.make_limited(3)
    try:
        first = await lease(limited, h, fns=fns)
        assert len(first) == 3
        assert await lease(other, h, fns=fns, owner="b") == []
        await limited.settle([settlement(first[0], State.SUCCEEDED)], h.clock.now)
        assert len(await lease(other, h, fns=fns, owner="b")) == 1
    finally:
        await limited.close()
        await other.close()


async def test_at_most_caps_one_lease_call_per_function(h: Harness) -> None:
    await h.queue.enqueue([new("f"), new("f"), new("f"), new("g")])
    fns = {"f": FunctionLimits(lease_s=10, at_most=2), "g": FunctionLimits(lease_s=10)}
    got = await lease(h.queue, h, fns=fns)
    assert sorted(x.invocation.function for x in got) == ["f", "f", "g"]
    [rest] = await lease(h.queue, h, fns=fns)
    assert rest.invocation.function == "f"


async def test_release_gives_the_invocation_back_unrun(h: Harness) -> None:
    await h.queue.enqueue([new()])
    [held] = await lease(h.queue, h)
    await h.queue.release([held.token])
    [again] = await lease(h.queue, h, owner="b")
    assert again.invocation.id == held.invocation.id
    assert again.invocation.attempts == 1


async def test_concurrent_leasers_never_share_an_invocation(h: Harness) -> None:
    items = [new() for _ in range(200)]
    await h.queue.enqueue(items)
    queues = [h.other() for _ in range(4)]
    seen: list[str] = []

    async def drain(q: InvocationQueue, owner: str) -> None:
        while got := await q.lease(7, owner, F, h.clock.now):
            seen.extend(x.invocation.id for x in got)

    try:
        await asyncio.gather(*(drain(q, f"o{i}") for i, q in enumerate(queues)))
    finally:
        for q in queues:
            await q.close()
    assert sorted(seen) == sorted(i.id for i in items)


async def test_wait_returns_promptly_when_work_is_enqueued(h: Harness) -> None:
    other = h.other()
    for q in (other, h.queue):
        if isinstance(q, PostgresQueue | RedisQueue):
            await q.start_listening()
    try:
        await lease(h.queue, h)  # arms the wake-up
        waiter = asyncio.create_task(h.queue.wait(F, timeout_s=30))
        await asyncio.sleep(0)
        await other.enqueue([new()])  # another process's enqueue
        await asyncio.wait_for(waiter, timeout=5)
        assert len(await lease(h.queue, h)) == 1
    finally:
        await other.close()


async def test_retry_may_replace_payload_and_source_and_keeps_the_lane(h: Harness) -> None:
    first, second = new(lane="A", payload=b"whole"), new(lane="A")
    await h.queue.enqueue([first, second])
    [held] = await lease(h.queue, h)
    await h.queue.settle(
        [
            settlement(
                held,
                State.PENDING,
                retry_at=h.clock.now,
                payload=b"half",
                source={"rest": ["other half"]},
            )
        ],
        h.clock.now,
    )
    [again] = await lease(h.queue, h)
    assert again.invocation.id == first.id
    assert (again.invocation.payload, dict(again.invocation.source)) == (
        b"half",
        {"rest": ["other half"]},
    )
    # A retry without them keeps what the invocation has now.
    await h.queue.settle([settlement(again, State.PENDING, retry_at=h.clock.now)], h.clock.now)
    [third] = await lease(h.queue, h)
    assert third.invocation.payload == b"half"
    assert dict(third.invocation.source) == {"rest": ["other half"]}
    await h.recorded()
    async with h.engine.connect() as conn:
        row = (
            await conn.execute(select(invocations.c.payload).where(invocations.c.id == first.id))
        ).one()
    assert row.payload == b"half"


async def test_lane_depths_count_unfinished_invocations(h: Harness) -> None:
    await h.queue.enqueue([new(lane="A"), new(lane="A"), new(lane="B"), new()])
    assert await h.queue.lane_depths(["A", "B", "C"]) == {"A": 2, "B": 1, "C": 0}
    got = await lease(h.queue, h)
    [in_a] = [x for x in got if x.invocation.lane == "A"]
    assert (await h.queue.lane_depths(["A"]))["A"] == 2  # running still counts
    await h.queue.settle([settlement(in_a, State.SUCCEEDED)], h.clock.now)
    assert await h.queue.lane_depths(["A"]) == {"A": 1}


BIG = bytes(range(256)) * 300
"""76,800 bytes, not UTF-8: a payload the Redis queue keeps out of line."""


async def stored_payload(h: Harness, id: str) -> bytes:
    await h.recorded()
    async with h.engine.connect() as conn:
        query = select(invocations.c.payload).where(invocations.c.id == id)
        payload: bytes = (await conn.execute(query)).scalar_one()
    return payload


@pytest.mark.parametrize(
    ("first", "then"),
    [(BIG, b'{"half": 1}'), (b'{"whole": 1}', BIG), (BIG, BIG[::-1])],
    ids=["big-then-small", "small-then-big", "big-then-big"],
)
async def test_payloads_of_any_size_come_back_byte_for_byte(
    h: Harness, first: bytes, then: bytes
) -> None:
    item = new(lane="A", payload=first)
    await h.queue.enqueue([item])
    await h.recorded()  # the history sees each step apart, as it does under load
    [held] = await lease(h.queue, h)
    assert held.invocation.payload == first
    retry = settlement(held, State.PENDING, retry_at=h.clock.now, payload=then)
    await h.queue.settle([retry], h.clock.now)
    await h.recorded()
    [again] = await lease(h.queue, h)
    assert again.invocation.payload == then
    follow_on = new("g", origin=Origin.DESTINATION, payload=first)
    await h.queue.settle([settlement(again, State.SUCCEEDED, enqueue=(follow_on,))], h.clock.now)
    [g] = await lease(h.queue, h, fns={"g": FunctionLimits(10)})
    assert g.invocation.payload == first
    await h.queue.settle([settlement(g, State.FAILED)], h.clock.now)
    assert await stored_payload(h, item.id) == then
    assert await stored_payload(h, follow_on.id) == first


async def test_chained_leases_hold_their_own_payloads(h: Harness) -> None:
    """Leases chained to settlements of two lanes settled together each hold their own
    invocation's payload, in line or out of it."""
    lanes = {
        "A": [b'{"a": 1}', BIG, BIG[::-1], b'{"a": 4}'],
        "B": [BIG[:5000], b'{"b": 2}', BIG[1:], BIG[2:]],
    }
    items = {lane: [new(lane=lane, payload=p) for p in ps] for lane, ps in lanes.items()}
    await h.queue.enqueue([item for lane in items.values() for item in lane])
    held = {str(first.invocation.lane): first for first in await lease(h.queue, h)}
    got: dict[str, list[bytes]] = {lane: [held[lane].invocation.payload] for lane in lanes}
    for _ in range(3):
        done = [settlement(held[lane], State.SUCCEEDED, chain_lease_s=10) for lane in lanes]
        chained = await h.queue.settle(done, h.clock.now)
        if None in chained.values():  # this backend does not chain
            assert set(chained.values()) == {None}
            chained = {again.token: again for again in await lease(h.queue, h)}
        held = {str(c.invocation.lane): c for c in chained.values() if c is not None}
        for lane in lanes:
            got[lane].append(held[lane].invocation.payload)
    assert got == lanes


async def test_a_lease_chained_to_a_settlement_is_the_lanes_next_and_only_then(
    h: Harness,
) -> None:
    """A backend may chain; if it does, the chained lease is the lane's due next one, held
    by the same owner, leased nowhere else, and counted running in its predecessor's place."""
    later = h.clock.now + timedelta(seconds=30)
    a1, a2, a3 = new(lane="A"), new(lane="A"), new(lane="A", available_at=later)
    limits = {"f": FunctionLimits(lease_s=10, reserved_concurrency=1)}
    await h.queue.enqueue([a1, a2, a3])
    [first] = await lease(h.queue, h, fns=limits)
    # A retry keeps the lane's head: nothing to chain.
    retry = settlement(first, State.PENDING, retry_at=h.clock.now, chain_lease_s=10)
    assert await h.queue.settle([retry], h.clock.now) == {first.token: None}
    [again] = await lease(h.queue, h, fns=limits)
    assert again.invocation.id == a1.id
    done = settlement(again, State.SUCCEEDED, chain_lease_s=10)
    chained = (await h.queue.settle([done], h.clock.now))[again.token]
    if chained is None:  # this backend does not chain: the next lease call has it
        [chained] = await lease(h.queue, h, fns=limits)
    else:
        assert await lease(h.queue, h, fns=limits) == []  # a2 is running, and only once
    assert chained.invocation.id == a2.id
    assert chained.invocation.attempts == 1
    assert chained.expires_at == h.clock.now + timedelta(seconds=10)
    other = new()
    await h.queue.enqueue([other])
    assert await lease(h.queue, h, fns=limits) == []  # a2 holds the one reserved slot
    # a3 is not due: it is never chained, and waits for its time.
    last = await h.queue.settle(
        [settlement(chained, State.SUCCEEDED, chain_lease_s=10)], h.clock.now
    )
    assert last == {chained.token: None}
    [then] = await lease(h.queue, h, fns=limits)
    assert then.invocation.id == other.id
    await h.queue.settle([settlement(then, State.SUCCEEDED)], h.clock.now)
    h.clock.advance(31)
    [third] = await lease(h.queue, h, fns=limits)
    assert third.invocation.id == a3.id
    # The running counts came back to nothing: the reserved concurrency of 1 has room.
    await h.queue.settle([settlement(third, State.SUCCEEDED)], h.clock.now)
    free = new()
    await h.queue.enqueue([free])
    assert [x.invocation.id for x in await lease(h.queue, h, fns=limits)] == [free.id]


async def test_running_counts_a_functions_leased_invocations_across_queues(h: Harness) -> None:
    await h.queue.enqueue([new("f"), new("f"), new("g")])
    assert await h.queue.running("f", h.clock.now) == 0
    fns = {"f": FunctionLimits(lease_s=10), "g": FunctionLimits(lease_s=10)}
    first, second, _ = sorted(
        await lease(h.queue, h, fns=fns), key=lambda held: held.invocation.function
    )
    other = h.other()
    try:
        assert await other.running("f", h.clock.now) == 2
        assert await other.running("g", h.clock.now) == 1
        await h.queue.settle([settlement(first, State.SUCCEEDED)], h.clock.now)
        await h.queue.release([second.token])
        assert await other.running("f", h.clock.now) == 0
        assert await other.running("nobody", h.clock.now) == 0
    finally:
        await other.close()
