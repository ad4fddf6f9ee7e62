"""SQS and SNS for tests: moto's server on a free port, speaking the real HTTP API.

``moto_server`` (session-wide) starts ``ThreadedMotoServer`` and sets the environment
that botocore reads (``AWS_ENDPOINT_URL``, a region, dummy credentials), so that code
under test and ``serve`` subprocesses reach it as they would reach AWS. ``sqs_queue``
makes a fresh standard queue per test; ``make_queue`` makes others (FIFO, with a redrive
policy).

Use it in a test module with
``from tests.support.moto import moto_server, sqs_queue  # noqa: F401``.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from tests.support.services import free_port

REGION = "eu-west-1"
ACCOUNT = "123456789012"
ENVIRONMENT = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": REGION,
}


@dataclass(frozen=True, slots=True)
class MotoServer:
    endpoint: str

    @property
    def environment(self) -> dict[str, str]:
        """What a ``serve`` subprocess needs to reach this server as botocore reaches AWS."""
        return {**ENVIRONMENT, "AWS_ENDPOINT_URL": self.endpoint}


@pytest.fixture(scope="session")
def moto_server() -> Iterator[MotoServer]:
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    saved = {key: os.environ.get(key) for key in (*ENVIRONMENT, "AWS_ENDPOINT_URL")}
    os.environ.update({**ENVIRONMENT, "AWS_ENDPOINT_URL": endpoint})
    try:
        yield MotoServer(endpoint)
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        server.stop()


@dataclass(frozen=True, slots=True)
class SqsQueue:
    url: str
    name: str
    arn: str

    @property
    def source_uri(self) -> str:
        """The queue as a mapping's ``source`` (``sqs://HOST/ACCOUNT/NAME``)."""
        return "sqs://" + self.url.split("://", 1)[1]


async def make_queue(
    server: MotoServer,
    name: str | None = None,
    *,
    fifo: bool = False,
    attributes: dict[str, str] | None = None,
) -> SqsQueue:
    """A new queue on ``server`` (``attributes`` as ``CreateQueue`` takes them)."""
    from aiobotocore.session import get_session

    name = name or f"eventwire-test-{uuid.uuid4().hex[:12]}"
    attributes = dict(attributes or {})
    if fifo:
        name = name if name.endswith(".fifo") else f"{name}.fifo"
        attributes["FifoQueue"] = "true"
    async with get_session().create_client(
        "sqs", region_name=REGION, endpoint_url=server.endpoint
    ) as sqs:
        created = await sqs.create_queue(QueueName=name, Attributes=attributes)
        url = created["QueueUrl"]
        found = await sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])
    return SqsQueue(url, name, found["Attributes"]["QueueArn"])


def redrive_policy(dead_letter: SqsQueue, max_receive_count: int) -> dict[str, str]:
    """``CreateQueue`` attributes sending a message to ``dead_letter`` after N receives."""
    policy: dict[str, Any] = {
        "deadLetterTargetArn": dead_letter.arn,
        "maxReceiveCount": str(max_receive_count),
    }
    return {"RedrivePolicy": json.dumps(policy)}


@pytest.fixture
async def sqs_queue(moto_server: MotoServer) -> AsyncIterator[SqsQueue]:
    yield await make_queue(moto_server)


async def send(
    server: MotoServer,
    queue: SqsQueue,
    bodies: list[str],
    *,
    group: str | None = None,
    attributes: dict[str, Any] | None = None,
) -> list[str]:
    """Send ``bodies`` in order (to message group ``group`` on a FIFO queue, each
    deduplicated by its position); answers their message ids."""
    from aiobotocore.session import get_session

    ids = []
    async with get_session().create_client(
        "sqs", region_name=REGION, endpoint_url=server.endpoint
    ) as sqs:
        for chunk_start in range(0, len(bodies), 10):
            entries = []
            for offset, body in enumerate(bodies[chunk_start : chunk_start + 10]):
                entry: dict[str, Any] = {"Id": str(offset), "MessageBody": body}
                if attributes:
                    entry["MessageAttributes"] = attributes
                if group is not None:
                    entry["MessageGroupId"] = group
                    entry["MessageDeduplicationId"] = uuid.uuid4().hex
                entries.append(entry)
            answer = await sqs.send_message_batch(QueueUrl=queue.url, Entries=entries)
            assert not answer.get("Failed"), answer["Failed"]
            by_id = {s["Id"]: s["MessageId"] for s in answer["Successful"]}
            ids += [by_id[str(offset)] for offset in range(len(entries))]
    return ids


async def counts(server: MotoServer, queue: SqsQueue) -> tuple[int, int]:
    """Messages in ``queue``: visible, and in flight (received, not deleted)."""
    from aiobotocore.session import get_session

    async with get_session().create_client(
        "sqs", region_name=REGION, endpoint_url=server.endpoint
    ) as sqs:
        answer = await sqs.get_queue_attributes(
            QueueUrl=queue.url,
            AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
        )
    found = answer["Attributes"]
    return (
        int(found["ApproximateNumberOfMessages"]),
        int(found["ApproximateNumberOfMessagesNotVisible"]),
    )


async def is_empty(server: MotoServer, queue: SqsQueue) -> bool:
    return await counts(server, queue) == (0, 0)
