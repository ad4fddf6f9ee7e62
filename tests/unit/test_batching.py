"""Batches close at batch_size or at their window; cuts make a replay form the same batches."""

from __future__ import annotations

from broker.events.filters import NO_FILTER, compile_filters
from broker.store.mappings import Cut
from pollers.batching import Batch, Batcher, Record


def rec(offset: int, data: bytes = b'{"type": "a"}', partition: str = "t-0") -> Record:
    return Record(partition, str(offset), 0, data, None)


def spans(batches: list[Batch]) -> list[tuple[str, str, bool]]:
    return [(b.first, b.last, b.cut) for b in batches]


def test_full_batches_close_at_once_and_the_rest_at_its_window() -> None:
    batcher = Batcher(batch_size=3, window_s=1.0, record_filter=NO_FILTER)
    for offset in range(7):
        batcher.add(rec(offset), now=0.0)
    taken = batcher.take(now=0.5)
    assert spans(taken.batches) == [("0", "2", False), ("3", "5", False)]
    assert [r.position for r in taken.checkpoint["t-0"]] == ["0", "1", "2", "3", "4", "5"]
    assert spans(batcher.take(now=1.0).batches) == [("6", "6", True)]


def test_filtered_records_are_checkpointed_but_never_batched() -> None:
    only_a = compile_filters([{"value": {"type": ["a"]}}], data_key="value")
    batcher = Batcher(batch_size=10, window_s=0.0, record_filter=only_a)
    batcher.add(rec(0, b'{"type": "b"}'), 0.0)
    batcher.add(rec(1), 0.0)
    batcher.add(rec(2, b"not json"), 0.0)
    taken = batcher.take(0.0)
    assert [[r.position for r in b.records] for b in taken.batches] == [["1"]]
    assert [r.position for r in taken.checkpoint["t-0"]] == ["0", "1", "2"]


def test_records_behind_a_waiting_batch_are_not_checkpointed() -> None:
    batcher = Batcher(batch_size=2, window_s=5.0, record_filter=NO_FILTER)
    for offset in range(3):
        batcher.add(rec(offset), 0.0)
    taken = batcher.take(0.0, budget={"t-0": 0})
    assert taken.batches == [] and "t-0" not in taken.checkpoint
    taken = batcher.take(0.0, budget={"t-0": 1})
    assert spans(taken.batches) == [("0", "1", False)]
    assert [r.position for r in taken.checkpoint["t-0"]] == ["0", "1"]


def test_a_recorded_cut_ends_the_replayed_batch_where_it_ended_before() -> None:
    # Before the crash the window closed a batch at offsets 4-6; more records have
    # come since. Replayed, the batch is 4-6 again (same idempotency key), then 7 on.
    batcher = Batcher(
        batch_size=10, window_s=60.0, record_filter=NO_FILTER, cuts={"t-0": Cut("4", "6")}
    )
    for offset in range(4, 12):
        batcher.add(rec(offset), 0.0)
    taken = batcher.take(0.0)
    assert spans(taken.batches) == [("4", "6", False)]
    assert spans(batcher.take(60.0).batches) == [("7", "11", True)]


def test_a_cut_for_other_records_is_ignored() -> None:
    batcher = Batcher(
        batch_size=2, window_s=60.0, record_filter=NO_FILTER, cuts={"t-0": Cut("1", "1")}
    )
    for offset in range(5, 9):
        batcher.add(rec(offset), 0.0)
    assert spans(batcher.take(0.0).batches) == [("5", "6", False), ("7", "8", False)]


def test_a_cut_waits_for_the_rest_of_its_batch() -> None:
    batcher = Batcher(
        batch_size=10, window_s=0.0, record_filter=NO_FILTER, cuts={"t-0": Cut("0", "2")}
    )
    batcher.add(rec(0), 0.0)
    assert batcher.take(5.0).batches == []  # the window does not close it early
    batcher.add(rec(1), 0.0)
    batcher.add(rec(2), 0.0)
    assert spans(batcher.take(5.0).batches) == [("0", "2", False)]


def test_a_partition_taken_over_follows_the_cut_its_last_reader_recorded() -> None:
    # This batcher began before the partition's previous owner, elsewhere, ended a batch at
    # 4-6 by its window and died before committing; it reads 4-11 again and must form 4-6.
    batcher = Batcher(batch_size=10, window_s=60.0, record_filter=NO_FILTER)
    batcher.take_over(["t-0"], {"t-0": Cut("4", "6"), "t-1": Cut("0", "0")})
    for offset in range(4, 12):
        batcher.add(rec(offset), 0.0)
    assert spans(batcher.take(0.0).batches) == [("4", "6", False)]
    assert spans(batcher.take(60.0).batches) == [("7", "11", True)]


def test_taking_over_keeps_what_was_read_of_a_partition_since_it_was_assigned() -> None:
    batcher = Batcher(batch_size=2, window_s=60.0, record_filter=NO_FILTER)
    batcher.add(rec(4), 0.0)
    batcher.take_over(["t-0"], {"t-0": Cut("4", "4")})
    batcher.add(rec(5), 0.0)
    assert spans(batcher.take(0.0).batches) == [("4", "5", False)]


def test_a_partition_taken_over_without_a_cut_forgets_a_stale_one() -> None:
    batcher = Batcher(
        batch_size=2, window_s=60.0, record_filter=NO_FILTER, cuts={"t-0": Cut("4", "4")}
    )
    batcher.take_over(["t-0"], {})
    for offset in range(4, 8):
        batcher.add(rec(offset), 0.0)
    assert spans(batcher.take(0.0).batches) == [("4", "5", False), ("6", "7", False)]


def test_extend_batches_as_adding_one_at_a_time_does() -> None:
    only_a = compile_filters([{"value": {"type": ["a"]}}], data_key="value")
    for record_filter in (NO_FILTER, only_a):
        one, many = (
            Batcher(batch_size=3, window_s=1.0, record_filter=record_filter) for _ in range(2)
        )
        records = [rec(n, b'{"type": "b"}' if n % 4 == 0 else b'{"type": "a"}') for n in range(11)]
        for record in records:
            one.add(record, 0.0)
        many.extend("t-0", records[:5], 0.0)
        many.extend("t-0", records[5:], 0.0)
        for now in (0.5, 1.0):
            a, b = one.take(now), many.take(now)
            assert spans(a.batches) == spans(b.batches)
            assert a.checkpoint == b.checkpoint
