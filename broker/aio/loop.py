"""The event loop a long-running Eventwire process runs on, and its heap.

uvloop where it is installed (a dependency on Linux and macOS): the same
asyncio API, with the loop, its timers and its sockets in C. On the Redis
queue it takes about 6% off the serving process's CPU per invocation.
Elsewhere, asyncio's own loop.
"""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def run(main: Coroutine[Any, Any, T]) -> T:
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main)
    return uvloop.run(main)


GC_THRESHOLDS = (50_000, 20, 10)
"""The collector's thresholds in a process that serves (:func:`tune_gc`); Python's are
(700, 10, 10)."""


def tune_gc() -> None:
    """Make the garbage collector fit a process that serves, once it has started.

    What is alive then — modules, configuration, clients — lives for the whole run: it
    is frozen (:func:`gc.freeze`), so that no full collection walks it again. And
    collections run less often: a serving process allocates container objects by the
    thousand per batch (a poller's records, a handler's decoded event) and frees them
    by reference counting, so at Python's default a young collection runs every few
    hundred records and collects next to nothing, while the records of a step, alive
    across it, are walked again and again into the older generations. On the Kafka
    poller's path (records to events) the default costs about a third of its CPU.
    Cyclic garbage still goes, after at most ``GC_THRESHOLDS[0]`` more allocations."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)
