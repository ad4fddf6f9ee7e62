"""``eventwire serve`` that kills itself (SIGKILL) right after a mapping's enqueue, for tests.

    CRASH_AFTER_BATCHES=N python -m tests.support.crash_serve serve -c eventwire.yaml

runs the very service ``eventwire serve`` runs, except that once a mapping's
reader has enqueued N batches, the process sends itself SIGKILL as soon as the
enqueue that reached N returns: its batches are durable in the queue, and their
records are neither committed (Kafka), acknowledged (RabbitMQ) nor XACKed
(Redis Streams) — the one moment a crash can leave records both enqueued and
still at the source. A kill from outside lands there only by luck. It is not
part of Eventwire.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Awaitable, Sequence

from broker.cli.main import main
from pollers.batching import Batch
from pollers.mapping_run import MappingRun


def crash_after(batches_enqueued: int) -> None:
    original = MappingRun.enqueue
    done = 0

    async def enqueue(
        self: MappingRun,
        batches: Sequence[Batch],
        lanes: Sequence[str] | None = None,
        *,
        after: Awaitable[object] | None = None,
    ) -> None:
        nonlocal done
        await original(self, batches, lanes, after=after)
        if batches:
            done += len(batches)
            if done >= batches_enqueued:
                os.kill(os.getpid(), signal.SIGKILL)

    MappingRun.enqueue = enqueue  # type: ignore[method-assign]


if __name__ == "__main__":
    crash_after(int(os.environ["CRASH_AFTER_BATCHES"]))
    main()
