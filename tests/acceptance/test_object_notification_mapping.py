"""MinIO publishes its notifications to RabbitMQ, and POSTs them to a webhook too: ``eventwire
serve`` invokes the function once per S3 event, whichever way it came, and keeps what is no
notification in the DLQ with the reason."""

from __future__ import annotations

import asyncio
import json
import re
import urllib.request
from pathlib import Path
from typing import Any

from tests.s3_samples import CEPH_EVENT_RECORD, MINIO_GUIDE
from tests.support.processes import Serve, clean_env, eventwire_json, wait_for
from tests.support.rabbitmq import RabbitQueue, rabbitmq_queue  # noqa: F401

CONFIG = """
functions:
  thumbs:
    handler: tests.handlers:echo
object_notifications:
  - name: uploads
    source: webhook
    token_env: UPLOADS_TOKEN
    events: ["s3:ObjectCreated:*"]
    function: thumbs
mappings:
  - name: uploads-from-minio
    source: {source}
    function: thumbs
    object_notifications:
      events: ["s3:ObjectCreated:*"]
      suffix: .jpg
"""


async def publish(queue: RabbitQueue, *bodies: str) -> None:
    import aio_pika

    connection = await aio_pika.connect(queue.url)
    try:
        channel = await connection.channel()
        for body in bodies:
            await channel.default_exchange.publish(
                aio_pika.Message(body.encode(), content_type="application/json"),
                routing_key=queue.name,
            )
    finally:
        await connection.close()


async def queued(queue: RabbitQueue) -> int:
    import aio_pika

    connection = await aio_pika.connect(queue.url)
    try:
        channel = await connection.channel()
        declared = await channel.declare_queue(queue.name, passive=True)
        return int(declared.declaration_result.message_count or 0)
    finally:
        await connection.close()


def read(request: urllib.request.Request) -> bytes:
    with urllib.request.urlopen(request, timeout=10) as response:
        body: bytes = response.read()
        return body


async def test_minio_through_rabbitmq_and_a_webhook_is_invoked_once(
    rabbitmq_queue: RabbitQueue,  # noqa: F811
    tmp_path: Path,
) -> None:
    config = tmp_path / "eventwire.yaml"
    config.write_text(CONFIG.format(source=rabbitmq_queue.source_uri))
    env = clean_env(
        EVENTWIRE_DATABASE_URL=f"sqlite+aiosqlite:///{tmp_path / 'eventwire.db'}",
        EVENTWIRE_HTTP_LISTEN="127.0.0.1:0",
        UPLOADS_TOKEN="t0ken",
    )
    serve = Serve(config, env, tmp_path / "serve.log")
    try:
        serve.wait_serving()
        url = serve.logged(r"listening on (http://\S+)/notifications/", "the listener's URL")
        request = urllib.request.Request(
            f"{url}/notifications/uploads",
            data=MINIO_GUIDE.encode(),
            headers={"Authorization": "Bearer t0ken"},
        )
        [by_webhook] = json.loads(await asyncio.to_thread(read, request))["invocations"]

        # The same event through RabbitMQ, a Ceph one, and a message that is no notification
        # (last: once it is in the DLQ, the mapping has read everything before it).
        await publish(rabbitmq_queue, MINIO_GUIDE, CEPH_EVENT_RECORD, '{"Records": null}')
        letters = wait_for(
            lambda: eventwire_json("dlq", "ls", "thumbs", env=env), 30, "the bad message in the DLQ"
        )

        def all_succeeded() -> list[dict[str, Any]] | None:
            rows: list[dict[str, Any]] = eventwire_json("invocations", "ls", env=env)
            return rows if all(row["state"] == "succeeded" for row in rows) else None

        rows = wait_for(all_succeeded, 30, "the invocations to succeed")
        [mapping] = eventwire_json("mappings", "ls", env=env)
    finally:
        assert serve.stop() == 0, serve.log()
    assert await queued(rabbitmq_queue) == 0, "every message acknowledged"

    # One invocation per S3 event: the webhook's MinIO event is the mapping's too.
    assert len(rows) == 2, rows
    by_key = {row["payload"]["Records"][0]["s3"]["object"]["key"]: row for row in rows}
    assert sorted(by_key) == ["myimage1.jpg", "myphoto.jpg"]
    assert by_key["myphoto.jpg"]["id"] == by_webhook
    ceph = by_key["myimage1.jpg"]
    assert ceph["origin"] == "notification"
    assert ceph["source"]["mapping"] == {"name": "uploads-from-minio"}
    [record] = ceph["result"]["Records"]  # echo: what the function received
    assert record["eventSource"] == "aws:s3" and record["eventName"] == "ObjectCreated:Put"
    assert record["s3"]["bucket"]["name"] == "mybucket1"
    assert record["s3"]["object"] == {
        "key": "myimage1.jpg",
        "size": 1024,
        "eTag": "37b51d194a7513e45b56f6524f2d51f2",
        "sequencer": "F7E6D75DC742D108",
    }

    [letter] = letters
    assert letter["error_type"] == "InvalidS3Notification"
    assert re.fullmatch(
        rf"mapping uploads-from-minio: message \w+ of queue {rabbitmq_queue.name} is not an S3 "
        "notification document: Records: expected a list, got null",
        letter["error_message"],
    ), letter

    assert mapping["name"] == "uploads-from-minio" and mapping["function"] == "thumbs"
    assert mapping["state"] == "enabled" and mapping["source"].startswith("amqp://guest:***@")
