"""``serve`` dead-letters a failed event to an SQS queue, as Lambda does, and keeps it in
its own DLQ, where ``eventwire dlq`` lists and redrives it.

The queue lives on moto's server; ``serve`` reaches it through botocore's chain only
(``AWS_ENDPOINT_URL`` and the region in its environment), the config naming the queue by
its ARN. The test reads the message back with boto3, as any consumer would.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.moto import REGION, MotoServer, SqsQueue, make_queue, moto_server  # noqa: F401
from tests.support.processes import Serve, clean_env, eventwire, eventwire_json, wait_for
from tests.support.stores import Store, store_for

CONFIG = """
functions:
  charge:
    handler: tests.handlers:boom
    retry: {{max_attempts: 2, backoff: {{initial: 100ms}}}}
    dead_letter: {queue}
"""


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    async with store_for("sqlite", tmp_path) as value:
        yield value


def received(server: MotoServer, queue: SqsQueue) -> list[dict[str, Any]]:
    import boto3

    sqs = boto3.client("sqs", region_name=REGION, endpoint_url=server.endpoint)
    answer = sqs.receive_message(
        QueueUrl=queue.url, MessageAttributeNames=["All"], MaxNumberOfMessages=10
    )
    messages: list[dict[str, Any]] = answer.get("Messages", [])
    return messages


async def test_a_failed_event_lands_in_the_sqs_queue_and_in_eventwires_dlq(
    store: Store,
    tmp_path: Path,
    moto_server: MotoServer,  # noqa: F811
) -> None:
    queue = await make_queue(moto_server)
    config = tmp_path / "eventwire.yaml"
    config.write_text(CONFIG.format(queue=queue.arn))
    env = clean_env(**store.env(), **moto_server.environment)
    serve = Serve(config, env, tmp_path / "serve.log")
    try:
        serve.wait_serving()
        queued = eventwire("invoke", "charge", "--async", "--payload", '{"order": 7}', env=env)
        assert queued.returncode == 0, queued.stderr
        request_id = queued.stdout.strip()
        [message] = wait_for(lambda: received(moto_server, queue), 30, "the dead letter")
        [letter] = eventwire_json("dlq", "ls", "charge", env=env)
        # A redrive runs the event again; it fails again and is dead-lettered again.
        redriven = eventwire("dlq", "redrive", "--id", letter["id"], env=env)
        assert redriven.returncode == 0, redriven.stderr
        [again] = wait_for(lambda: received(moto_server, queue), 30, "the redriven dead letter")
    finally:
        assert serve.stop() == 0, serve.log()
    assert json.loads(message["Body"]) == {"order": 7}
    attributes = message["MessageAttributes"]
    assert attributes["RequestID"] == {"DataType": "String", "StringValue": request_id}
    assert attributes["ErrorCode"] == {"DataType": "Number", "StringValue": "200"}
    assert attributes["ErrorMessage"]["DataType"] == "String"
    assert letter["request_id"] == request_id
    assert attributes["ErrorMessage"]["StringValue"] == letter["error_message"]
    assert json.loads(again["Body"]) == {"order": 7}
    assert again["MessageAttributes"]["RequestID"]["StringValue"] != request_id
