"""From records read off a source to batches ready to enqueue, and what may be checkpointed.

Transport-free: the Kafka, RabbitMQ and Redis Streams pollers turn what they
read into :class:`Record` values and hand them to a :class:`Batcher`, one per
mapping. Per partition (a Kafka partition, a stream, a queue) it

* drops records no filter matches (they are checkpointed with the rest, never invoked);
* closes a batch at ``batch_size`` matching records, or when the batch window
  of its first record has run out (a *cut*), whichever comes first;
* says which records may be checkpointed once a batch is enqueued: every
  record read up to the first one still waiting in a batch.

Batch boundaries are deterministic, so that after a crash the same records
form the same batches and their idempotency keys (mapping, seek generation,
partition, first and last position) match what was enqueued before: a full
batch is fixed by its records, and a cut is recorded before its batch is
enqueued (:class:`~broker.store.mappings.Cut`) and followed again on replay.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import msgspec

from broker.events.filters import RecordFilter
from broker.store.mappings import Cut


class Record(msgspec.Struct, gc=False):
    """One record as read: where it is, when it was written, its data, the transport's item.

    A msgspec Struct, made in C: pollers make one per record read, in half the
    time a slotted dataclass takes. Untracked by the garbage collector (``gc=False``):
    none is ever part of a reference cycle (what it holds never refers back to it), and
    a collection would only walk the step's records again."""

    partition: str
    position: str
    timestamp_ms: int
    data: bytes | str | None
    item: Any
    """What the event shaper takes (aiokafka's record, a ``StreamEntry``, an ``AmqpMessage``)."""
    json_data: Any = None
    """Data already decoded (a stream entry's fields); filters use it instead of ``data``."""
    metadata: Any = None
    """What else a filter may look at besides the data (an SQS message's attributes)."""


@dataclass(frozen=True, slots=True)
class Batch:
    partition: str
    records: tuple[Record, ...]
    cut: bool
    """Closed by its window rather than by ``batch_size``: recorded before it is enqueued."""

    @property
    def first(self) -> str:
        return self.records[0].position

    @property
    def last(self) -> str:
        return self.records[-1].position

    @property
    def oldest_ms(self) -> int:
        return min(r.timestamp_ms for r in self.records)


@dataclass(slots=True)
class _Partition:
    read: list[Record] = field(default_factory=list)
    """Records read and not yet checkpointable, in order (filtered ones too)."""
    waiting: list[Record] = field(default_factory=list)
    """Matching records not yet in a batch."""
    arrived: list[float] = field(default_factory=list)
    """When each waiting record was read (a batch's window runs from its first)."""
    cut: Cut | None = None

    @property
    def opened_at(self) -> float:
        return self.arrived[0]


@dataclass(slots=True)
class Taken:
    """What a call to :meth:`Batcher.take` gives: batches to enqueue, then records to
    checkpoint (per partition, in order) once they are enqueued."""

    batches: list[Batch]
    checkpoint: dict[str, list[Record]]


class Batcher:
    def __init__(
        self,
        *,
        batch_size: int,
        window_s: float,
        record_filter: RecordFilter,
        cuts: dict[str, Cut] | None = None,
    ) -> None:
        self.batch_size = batch_size
        self.window_s = window_s
        self.filter = record_filter
        self._partitions: dict[str, _Partition] = {}
        self._cuts = dict(cuts or {})
        self.filtered = 0

    def add(self, record: Record, now: float) -> None:
        part = self._partitions.get(record.partition)
        if part is None:
            part = self._partitions[record.partition] = _Partition()
            part.cut = self._cuts.pop(record.partition, None)
        part.read.append(record)
        if not self._matches(record):
            self.filtered += 1
            return
        part.waiting.append(record)
        part.arrived.append(now)

    def extend(self, partition: str, records: Sequence[Record], now: float) -> None:
        """:meth:`add` each of ``records``, all read from ``partition`` at ``now``."""
        if not self.filter.accepts_all:
            for record in records:
                self.add(record, now)
            return
        part = self._partitions.get(partition)
        if part is None:
            part = self._partitions[partition] = _Partition()
            part.cut = self._cuts.pop(partition, None)
        part.read.extend(records)
        part.waiting.extend(records)
        part.arrived.extend([now] * len(records))

    def _matches(self, record: Record) -> bool:
        if self.filter.accepts_all:
            return True
        if record.json_data is not None:
            return self.filter.matches_json(record.json_data, record.metadata)
        return self.filter.matches(record.data, record.metadata)

    def forget(self, partitions: Sequence[str]) -> None:
        """Drop what was read from ``partitions`` (revoked, or sought elsewhere)."""
        for name in partitions:
            self._partitions.pop(name, None)

    def take_over(self, partitions: Sequence[str], cuts: Mapping[str, Cut]) -> None:
        """Follow ``cuts`` (the latest recorded cut batches: another process may have read
        these partitions since this batcher began) in ``partitions`` it holds nothing of;
        what it read of the others since they were assigned stays as it is."""
        for name in partitions:
            if name in self._partitions:
                continue
            cut = cuts.get(name)
            if cut is None:
                self._cuts.pop(name, None)
            else:
                self._cuts[name] = cut

    def buffered(self) -> int:
        return sum(len(p.read) for p in self._partitions.values())

    def waiting(self, partition: str) -> int:
        """Matching records of ``partition`` not yet in a batch."""
        part = self._partitions.get(partition)
        return len(part.waiting) if part is not None else 0

    def held_back(self) -> bool:
        """Whether a full batch is waiting (for room in its lane)."""
        return any(len(p.waiting) >= self.batch_size for p in self._partitions.values())

    def next_deadline(self) -> float | None:
        """When the earliest open batch's window runs out."""
        opened = [p.opened_at for p in self._partitions.values() if p.waiting]
        return min(opened) + self.window_s if opened else None

    def partitions(self) -> list[str]:
        return list(self._partitions)

    def take(self, now: float, budget: Mapping[str, int] | None = None) -> Taken:
        """Batches ready now; with ``budget``, at most that many per partition (the rest wait)."""
        taken = Taken([], {})
        for name, part in self._partitions.items():
            room = None if budget is None else budget.get(name, 0)
            if room is not None and room <= 0:
                continue
            self._close(name, part, now, taken.batches, room)
            done = _checkpointable(part)
            if done:
                taken.checkpoint[name] = done
        return taken

    def _close(
        self, name: str, part: _Partition, now: float, out: list[Batch], room: int | None
    ) -> None:
        limit = None if room is None else len(out) + room
        waiting, size = part.waiting, self.batch_size
        start = 0  # batches are cut from ``waiting[start:]``; what they took leaves at the end
        while start < len(waiting) and (limit is None or len(out) < limit):
            if part.cut is not None:
                end = _index_of(waiting, part.cut.last, start)
                if waiting[start].position != part.cut.first or (
                    end is None and _past(waiting[-1].position, part.cut.last)
                ):
                    part.cut = None  # not this batch's: read normally
                    continue
                if end is None:
                    break  # the rest of the cut batch is still to be read
                out.append(Batch(name, tuple(waiting[start : end + 1]), False))
                start = end + 1
                part.cut = None
            elif len(waiting) - start >= size:
                out.append(Batch(name, tuple(waiting[start : start + size]), False))
                start += size
            elif now - part.arrived[start] >= self.window_s:
                out.append(Batch(name, tuple(waiting[start:]), True))
                start = len(waiting)
            else:
                break
        if start:
            del waiting[:start]
            del part.arrived[:start]


def _index_of(records: list[Record], position: str, start: int = 0) -> int | None:
    for index in range(start, len(records)):
        if records[index].position == position:
            return index
    return None


def _past(position: str, last: str) -> bool:
    """Whether ``position`` lies beyond ``last`` (offsets or stream entry ids)."""
    return _order(position) > _order(last)


def _order(position: str) -> tuple[int, int]:
    head, _, tail = position.partition("-")
    try:
        return int(head), int(tail or 0)
    except ValueError:
        return (0, 0)


def _checkpointable(part: _Partition) -> list[Record]:
    """Records read before the first one still waiting; they leave ``part.read``."""
    if not part.waiting:
        done, part.read = part.read, []
        return done
    first = part.waiting[0]
    for index, record in enumerate(part.read):
        if record is first:
            done, part.read = part.read[:index], part.read[index:]
            return done
    return []


Shaper = Callable[[Sequence[Any]], bytes]
"""A mapping's event shaper: the payload of a batch from its records' items."""
TraceOf = Callable[[Any], str | None]
"""The W3C ``traceparent`` a record's item came with (a header, a field), if any."""
