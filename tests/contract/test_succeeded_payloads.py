"""``EVENTWIRE_KEEP_SUCCEEDED_PAYLOADS``, on every queue: off, the history keeps an empty
payload for an invocation that succeeded and every other payload as it was; on (the
default), it keeps them all."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from broker.models import FunctionLimits, State
from broker.store.schema import dead_letters, invocations
from tests.contract.test_queue_contract import BIG, QUEUES, lease, new
from tests.support.queue_harness import Harness, dead_letter, harness, settlement


async def history(h: Harness) -> tuple[dict[str, bytes], dict[str, bytes]]:
    """Every invocation's stored payload, and every dead letter's, by invocation id."""
    await h.recorded()
    async with h.engine.connect() as conn:
        kept = dict((await conn.execute(select(invocations.c.id, invocations.c.payload))).all())
        letters = dict(
            (await conn.execute(select(dead_letters.c.invocation_id, dead_letters.c.payload))).all()
        )
    return kept, letters


@pytest.mark.parametrize("keep", [True, False], ids=["kept", "not-kept"])
@pytest.mark.parametrize("queue", QUEUES)
async def test_succeeded_payloads_are_kept_unless_turned_off(
    queue: str, keep: bool, tmp_path: Path
) -> None:
    async with harness(queue, tmp_path, keep_succeeded_payloads=keep) as h:
        # Its history row is written before it succeeds (the Redis queue: an earlier batch).
        early = new(payload=b'{"early": 1}')
        await h.queue.enqueue([early])
        await h.recorded()
        big = new(payload=BIG)  # out of line on the Redis queue
        small = new(payload=b'{"small": 1}')
        part = new(payload=b'{"whole": 1}')  # succeeds with a payload of its own
        failed = new(payload=BIG[::-1])
        dead = new(payload=b'{"dead": 1}')
        retried = new(payload=b'{"retried": 1}')
        waiting = new("g", payload=b'{"waiting": 1}')
        running = new("r", payload=b'{"running": 1}')
        await h.queue.enqueue([big, small, part, failed, dead, retried, waiting, running])
        held = {x.invocation.id: x for x in await lease(h.queue, h)}
        await lease(h.queue, h, fns={"r": FunctionLimits(lease_s=10)})
        now = h.clock.now
        settled = await h.queue.settle(
            [
                settlement(held[early.id], State.SUCCEEDED),
                settlement(held[big.id], State.SUCCEEDED),
                settlement(held[small.id], State.SUCCEEDED, result=b'"ok"'),
                settlement(held[part.id], State.SUCCEEDED, payload=BIG + b"!"),
                settlement(held[failed.id], State.FAILED),
                settlement(held[dead.id], State.FAILED, dead_letter=dead_letter(held[dead.id], h)),
                settlement(held[retried.id], State.PENDING, retry_at=now + timedelta(minutes=1)),
            ],
            now,
        )
        assert len(settled) == 7
        kept, letters = await history(h)

    succeeded = {early.id: early.payload, big.id: BIG, small.id: small.payload, part.id: BIG + b"!"}
    others = [failed, dead, retried, waiting, running]
    assert {id: kept[id] for id in succeeded} == (
        succeeded if keep else dict.fromkeys(succeeded, b"")
    )
    assert {item.id: kept[item.id] for item in others} == {i.id: i.payload for i in others}
    assert letters == {dead.id: dead.payload}
