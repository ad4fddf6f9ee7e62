"""Following many invocations to their outcomes at once (:func:`finished_of`), on every
queue: what an SQS reader asks every few hundred milliseconds, and what the synchronous
Invoke API waits with (:func:`wait_finished`)."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from broker.functions.invoking import finished_of, wait_finished
from broker.models import State
from tests.contract.test_queue_contract import QUEUES, lease, new
from tests.support.queue_harness import harness, settlement


@pytest.mark.parametrize("queue", QUEUES)
async def test_finished_of_answers_the_finished_ones_with_their_results(
    queue: str, tmp_path: Path
) -> None:
    async with harness(queue, tmp_path) as h:
        ok, failed, retried, waiting = (new(payload=b'{"n": %d}' % n) for n in range(4))
        await h.queue.enqueue([ok, failed, retried, waiting])
        await h.recorded()
        ids = [ok.id, failed.id, retried.id, waiting.id]
        assert await finished_of(h.engine, ids) == {}
        held = {x.invocation.id: x for x in await lease(h.queue, h)}
        later = h.clock.now + timedelta(minutes=1)
        await h.queue.settle(
            [
                settlement(held[ok.id], State.SUCCEEDED, result=b'{"batchItemFailures": []}'),
                settlement(held[failed.id], State.FAILED, error_type="E", error_message="m"),
                settlement(held[retried.id], State.PENDING, retry_at=later),
            ],
            h.clock.now,
        )
        await h.recorded()
        found = await finished_of(h.engine, [*ids, "no-such-invocation"])
        assert set(found) == {ok.id, failed.id}
        assert found[ok.id].state is State.SUCCEEDED
        assert found[ok.id].result == b'{"batchItemFailures": []}'
        assert (found[failed.id].state, found[failed.id].error_type) == (State.FAILED, "E")
        one = await wait_finished(h.engine, failed.id, 1)
        assert one == found[failed.id]
        assert await finished_of(h.engine, []) == {}
