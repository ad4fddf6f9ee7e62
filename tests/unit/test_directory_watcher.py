"""The ``dir://`` watcher's bookkeeping: a crash between enqueue and record makes no duplicate."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import delete

from broker.config.settings import Settings
from broker.loading import parse_config
from broker.sources.pollers import PollerContext, SystemTimer
from broker.store.schema import object_files
from pollers.s3.directory import create
from tests.support.stores import migrated_engine
from tests.support.waiting import eventually
from tests.unit.test_history import FakeQueue


async def test_a_crash_before_the_record_is_written_enqueues_nothing_new(tmp_path: Path) -> None:
    folder = tmp_path / "drop"
    folder.mkdir()
    (folder / "a.txt").write_text("a")
    config = parse_config(
        {
            "functions": {"f": {"handler": "m:f"}},
            "object_notifications": [
                {"name": "drop", "source": f"dir://{folder}", "function": "f", "settle": "10ms"}
            ],
        }
    )
    queue = FakeQueue()
    async with migrated_engine("sqlite", tmp_path) as engine:
        context = PollerContext(
            Settings(),
            config,
            engine,
            queue,  # type: ignore[arg-type]
            "test",
            SystemTimer(),
        )
        first = create(context)
        await first.start()
        [watch] = first.watches
        first._scan(watch)

        async def reported() -> bool:
            await first._settle(watch)
            return bool(queue.enqueued)

        await eventually(reported, 5, "a.txt reported")
        # As if the process died after the enqueue, before remembering the file:
        async with engine.begin() as conn:
            await conn.execute(delete(object_files))

        second = create(context)
        await second.start()
        [again] = second.watches
        assert again.seen == {}
        second._scan(again)

        async def reported_again() -> bool:
            await second._settle(again)
            return len(queue.enqueued) == 2

        await eventually(reported_again, 5, "a.txt enqueued again")

    keys = [item.idempotency_key for item in queue.enqueued]
    assert keys[0] == keys[1]  # the same key: the queue keeps one invocation
    assert len(set(queue.by_key.values())) == 1
    assert "a.txt" in again.seen  # remembered now
