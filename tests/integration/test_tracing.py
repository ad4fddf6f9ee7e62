"""Traces follow the event: from the ``traceparent`` it came with, through each attempt,
to its dead letter and its redrive, in the spans the SDK's in-memory exporter holds."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from broker.api.lambda_api import LambdaApi
from broker.observability.otel import OtelTracing
from broker.observability.tracing import TRACEPARENT
from broker.service import Service
from broker.store.history import list_dead_letters, redrive
from tests.support.kafka import create_topic, kafka_bootstrap, unique_topic  # noqa: F401
from tests.support.rabbitmq import RabbitQueue, rabbitmq_queue  # noqa: F401
from tests.support.redis_streams import RedisStream, redis_stream  # noqa: F401
from tests.support.service import running_service
from tests.support.stores import Store, store_for

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT = "00f067aa0ba902b7"
TRACEPARENT_IN = f"00-{TRACE}-{PARENT}-01"


@pytest.fixture
def exported() -> Iterator[tuple[OtelTracing, InMemorySpanExporter]]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield OtelTracing(provider), exporter
    provider.shutdown()


@pytest.fixture(params=["sqlite", "redis"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    async with store_for(request.param, tmp_path) as where:
        yield where


def span_id(span: ReadableSpan) -> str:
    assert span.context is not None
    return f"{span.context.span_id:016x}"


def trace_of(span: ReadableSpan) -> str:
    assert span.context is not None
    return f"{span.context.trace_id:032x}"


def parent_of(span: ReadableSpan) -> str | None:
    return f"{span.parent.span_id:016x}" if span.parent is not None else None


def named(spans: tuple[ReadableSpan, ...], name: str) -> list[ReadableSpan]:
    return sorted((s for s in spans if s.name == name), key=lambda s: s.start_time or 0)


async def until(check: object, what: str, timeout_s: float = 30) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not callable(check) or not check():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


def api_url(service: Service) -> str:
    [api] = [p for p in service.pollers if isinstance(p, LambdaApi)]
    assert api.url is not None
    return api.url


@pytest.mark.parametrize(
    ("method", "path"),
    [("POST", "/2015-03-31/functions/traced/invocations"), ("GET", "/fn/traced/")],
    ids=["invoke-api", "function-url"],
)
async def test_an_http_call_is_one_trace_and_the_handler_runs_in_it(
    store: Store, exported: tuple[OtelTracing, InMemorySpanExporter], method: str, path: str
) -> None:
    """Through the Invoke API or a function URL, the caller's traceparent is the parent."""
    tracing, exporter = exported
    functions = {
        "traced": {"handler": "tests.handlers:current_trace", "function_url": {"auth": "NONE"}}
    }
    async with (
        running_service(store, functions, tracing=tracing, api_listen="127.0.0.1:0") as service,
        aiohttp.ClientSession() as http,
        http.request(
            method, f"{api_url(service)}{path}", data=b"{}", headers={"traceparent": TRACEPARENT_IN}
        ) as response,
    ):
        assert response.status == 200, await response.text()
        seen = json.loads(await response.read())
        await until(lambda: named(exporter.get_finished_spans(), "attempt traced"), "the attempt")
    spans = exporter.get_finished_spans()
    [enqueue] = named(spans, "enqueue traced")
    [attempt] = named(spans, "attempt traced")
    [invoke] = named(spans, "invoke traced")
    [settle] = named(spans, "settle traced")
    assert {trace_of(s) for s in (enqueue, attempt, invoke, settle)} == {TRACE}
    assert parent_of(enqueue) == PARENT and enqueue.kind is SpanKind.PRODUCER
    assert parent_of(attempt) == span_id(enqueue) and attempt.kind is SpanKind.CONSUMER
    assert parent_of(invoke) == parent_of(settle) == span_id(attempt)
    assert attempt.attributes is not None and attempt.attributes["eventwire.outcome"] == "success"
    # The handler (sync, on a worker thread) ran within the invoke span.
    assert seen == {"trace_id": TRACE, "span_id": span_id(invoke)}


async def test_without_a_traceparent_each_invocation_is_its_own_trace(
    store: Store, exported: tuple[OtelTracing, InMemorySpanExporter]
) -> None:
    tracing, exporter = exported
    functions = {"traced": {"handler": "tests.handlers:current_trace"}}
    async with (
        running_service(store, functions, tracing=tracing, api_listen="127.0.0.1:0") as service,
        aiohttp.ClientSession() as http,
    ):
        for _ in range(2):
            url = f"{api_url(service)}/2015-03-31/functions/traced/invocations"
            async with http.post(url, data=b"{}") as response:
                assert response.status == 200
        await until(
            lambda: len(named(exporter.get_finished_spans(), "attempt traced")) == 2,
            "both attempts",
        )
    spans = exporter.get_finished_spans()
    enqueues = named(spans, "enqueue traced")
    assert [parent_of(s) for s in enqueues] == [None, None]
    assert len({trace_of(s) for s in enqueues}) == 2
    for attempt in named(spans, "attempt traced"):
        assert parent_of(attempt) in {span_id(s) for s in enqueues}


async def test_a_kafka_records_trace_goes_through_its_retry_to_the_dlq_and_its_redrive(
    kafka_bootstrap: str,  # noqa: F811
    tmp_path: Path,
    exported: tuple[OtelTracing, InMemorySpanExporter],
) -> None:
    from aiokafka import AIOKafkaProducer

    tracing, exporter = exported
    topic = unique_topic("traced")
    await create_topic(kafka_bootstrap, topic)
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap)
    await producer.start()
    try:
        await producer.send_and_wait(
            topic, b'{"n": 1}', headers=[("traceparent", TRACEPARENT_IN.encode())]
        )
    finally:
        await producer.stop()
    mapping = {
        "name": "orders",
        "source": f"kafka://{kafka_bootstrap}/{topic}",
        "function": "boom",
        "batch_size": 1,
        "starting_position": "trim_horizon",
        "max_retry_attempts": 1,
    }
    functions = {"boom": {"handler": "tests.handlers:boom"}}
    async with (
        store_for("sqlite", tmp_path) as where,
        running_service(
            where, functions, config={"mappings": [mapping]}, tracing=tracing
        ) as service,
    ):
        await until(
            lambda: named(exporter.get_finished_spans(), "dead-letter boom"), "the dead letter"
        )
        [poller] = service.pollers
        engine = poller.context.engine  # type: ignore[attr-defined]
        [letter] = await list_dead_letters(engine, function="boom")
        spans = exporter.get_finished_spans()
        [enqueue] = named(spans, "enqueue boom")
        attempts = named(spans, "attempt boom")
        invokes = named(spans, "invoke boom")
        [dead] = named(spans, "dead-letter boom")
        # One trace, from the record's header: enqueued under it, tried twice (the
        # first attempt and its one retry, siblings), dead-lettered by the last.
        assert trace_of(enqueue) == TRACE and parent_of(enqueue) == PARENT
        assert [a.attributes["eventwire.attempt"] for a in attempts] == [1, 2]  # type: ignore[index]
        assert {parent_of(a) for a in attempts} == {span_id(enqueue)}
        assert [a.attributes["eventwire.state"] for a in attempts] == ["pending", "failed"]  # type: ignore[index]
        assert all(s.status.status_code is StatusCode.ERROR for s in attempts + invokes)
        assert [e.name for e in invokes[0].events] == ["exception"]
        assert parent_of(dead) == span_id(attempts[-1]) and trace_of(dead) == TRACE
        assert (
            dead.attributes is not None and dead.attributes["eventwire.dead_letter_id"] == letter.id
        )
        assert letter.source[TRACEPARENT].split("-")[1] == TRACE

        # Redriven, the event is enqueued again in the same trace.
        queue = service.dispatcher.queue  # type: ignore[union-attr]
        await redrive(engine, queue, [letter.id], datetime.now(UTC))
        await until(
            lambda: len(named(exporter.get_finished_spans(), "attempt boom")) == 3,
            "the redriven attempt",
        )
        spans = exporter.get_finished_spans()
        again = named(spans, "enqueue boom")[1]
        assert trace_of(again) == TRACE and parent_of(again) == span_id(enqueue)
        assert parent_of(named(spans, "attempt boom")[2]) == span_id(again)


async def _publish_traced(kind: str, rabbit: RabbitQueue, stream: RedisStream) -> str:
    """Publish one record carrying ``TRACEPARENT_IN`` to a ``kind`` source; its URI."""
    if kind == "amqp":
        import aio_pika

        connection = await aio_pika.connect(rabbit.url)
        async with connection:
            channel = await connection.channel()
            message = aio_pika.Message(b'{"n": 1}', headers={"traceparent": TRACEPARENT_IN})
            await channel.default_exchange.publish(message, routing_key=rabbit.name)
        return rabbit.source_uri
    from redis.asyncio import Redis

    client = Redis.from_url(stream.url)
    try:
        await client.xadd(stream.key, {"data": '{"n": 1}', "traceparent": TRACEPARENT_IN})
    finally:
        await client.aclose()
    return stream.source_uri()


@pytest.mark.parametrize("kind", ["amqp", "redis"])
async def test_an_amqp_header_or_a_stream_field_is_the_parent_of_the_invocation(
    kind: str,
    rabbitmq_queue: RabbitQueue,  # noqa: F811
    redis_stream: RedisStream,  # noqa: F811
    tmp_path: Path,
    exported: tuple[OtelTracing, InMemorySpanExporter],
) -> None:
    tracing, exporter = exported
    source = await _publish_traced(kind, rabbitmq_queue, redis_stream)
    mapping = {"name": "traced", "source": source, "function": "noop", "batch_size": 1}
    if kind == "redis":
        mapping["starting_position"] = "trim_horizon"
    functions = {"noop": {"handler": "tests.handlers:noop"}}
    async with (
        store_for("sqlite", tmp_path) as where,
        running_service(where, functions, config={"mappings": [mapping]}, tracing=tracing),
    ):
        await until(lambda: named(exporter.get_finished_spans(), "settle noop"), "the settle")
    spans = exporter.get_finished_spans()
    [enqueue] = named(spans, "enqueue noop")
    assert trace_of(enqueue) == TRACE and parent_of(enqueue) == PARENT
    [attempt] = named(spans, "attempt noop")
    assert trace_of(attempt) == TRACE and parent_of(attempt) == span_id(enqueue)


async def test_a_webhooks_traceparent_is_the_parent_of_the_invocation(
    tmp_path: Path,
    exported: tuple[OtelTracing, InMemorySpanExporter],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from pollers.s3.webhook import WebhookServer
    from tests.s3_samples import MINIO_WEBHOOK_PUT

    tracing, exporter = exported
    monkeypatch.setenv("UPLOADS_TOKEN", "token")
    notifications = [
        {"name": "uploads", "source": "webhook", "token_env": "UPLOADS_TOKEN", "function": "noop"}
    ]
    functions = {"noop": {"handler": "tests.handlers:noop"}}
    async with (
        store_for("sqlite", tmp_path) as where,
        running_service(
            where,
            functions,
            config={"object_notifications": notifications},
            tracing=tracing,
            http_listen="127.0.0.1:0",
        ) as service,
    ):
        [server] = [p for p in service.pollers if isinstance(p, WebhookServer)]
        headers = {"Authorization": "Bearer token", "traceparent": TRACEPARENT_IN}
        async with (
            aiohttp.ClientSession() as http,
            http.post(
                f"{server.url}/notifications/uploads", data=MINIO_WEBHOOK_PUT, headers=headers
            ) as response,
        ):
            assert response.status == 200, await response.text()
        await until(lambda: named(exporter.get_finished_spans(), "settle noop"), "the settle")
    [enqueue] = named(exporter.get_finished_spans(), "enqueue noop")
    assert trace_of(enqueue) == TRACE and parent_of(enqueue) == PARENT
