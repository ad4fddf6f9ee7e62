"""The RabbitMQ reader stops when cancelled, even while messages keep arriving."""

from __future__ import annotations

import asyncio
from typing import Any

from broker.config.mappings import MappingConfig
from pollers.rabbitmq import RabbitReader


async def test_a_cancel_that_meets_an_arriving_message_still_stops_the_reader() -> None:
    mapping = MappingConfig.model_validate(
        {"name": "emails", "source": "amqp://guest:guest@localhost/%2F?queue=q", "function": "f"}
    )
    reader = RabbitReader(mapping, context=None)  # type: ignore[arg-type]
    run: Any = None  # not reached: the reader is cancelled before it adds the message
    task = asyncio.create_task(reader._gather(run, 10))
    await asyncio.sleep(0)  # the reader waits for its first message
    reader.inbox.put_nowait(object())  # type: ignore[arg-type]
    task.cancel()  # in the same turn of the loop as the message's arrival
    done, _ = await asyncio.wait({task}, timeout=5)
    assert task in done and task.cancelled()
