"""``serve`` with the standard ``OTEL_*`` variables sends its spans to an OTLP collector.

A real ``serve`` process exports over OTLP/HTTP to a receiver the test runs. Calls to
the Invoke API come with a ``traceparent``: the spans of each invocation are in that
trace, a process-pool handler sees it as Lambda's ``_X_AMZN_TRACE_ID``, and the JSON
log line about a failure carries its trace id.
"""

from __future__ import annotations

import json
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.acceptance.test_metrics import scrape
from tests.support.metrics import METRICS_URL, value
from tests.support.otlp import ReceivedSpan, otlp_receiver
from tests.support.processes import Serve, clean_env, eventwire, wait_for
from tests.support.stores import Store, store_for

CONFIG = """
functions:
  flaky:
    handler: tests.handlers:boom
    retry: {max_attempts: 1}
  pooled:
    invoker: process
    handler: tests.runtime_handlers.trace_header
"""
SYNC_TRACE = "0af7651916cd43dd8448eb211c80319c"
ASYNC_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    async with store_for("sqlite", tmp_path) as value:
        yield value


def invoke(api: str, function: str, trace: str, *, event: bool = False) -> bytes:
    request = urllib.request.Request(
        f"{api}/2015-03-31/functions/{function}/invocations",
        data=b"{}",
        headers={
            "traceparent": f"00-{trace}-b7ad6b7169203331-01",
            "X-Amz-Invocation-Type": "Event" if event else "RequestResponse",
        },
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        body: bytes = response.read()
        return body


def log_lines(serve: Serve) -> list[dict[str, Any]]:
    return [json.loads(line) for line in serve.log().splitlines() if line.startswith("{")]


def of_trace(spans: list[ReceivedSpan], trace: str) -> dict[str, ReceivedSpan]:
    return {span.name: span for span in spans if span.trace_id == trace}


def test_serve_exports_each_invocations_spans_over_otlp(store: Store, tmp_path: Path) -> None:
    config = tmp_path / "eventwire.yaml"
    config.write_text(CONFIG)
    with otlp_receiver() as collector:
        env = clean_env(
            **store.env(),
            EVENTWIRE_API_LISTEN="127.0.0.1:0",
            EVENTWIRE_LOG_FORMAT="json",
            OTEL_EXPORTER_OTLP_ENDPOINT=collector.url,
            OTEL_BSP_SCHEDULE_DELAY="100",
        )
        serve = Serve(config, env, tmp_path / "serve.log")
        try:
            serve.wait_serving()
            api = serve.logged(r"Lambda API: listening on (http://\S+)/2015-03-31/", "the API")
            header = json.loads(invoke(api, "pooled", SYNC_TRACE))
            invoke(api, "flaky", ASYNC_TRACE, event=True)
            failed = wait_for(
                lambda: next(
                    (d for d in log_lines(serve) if "failed for good" in d["message"]), None
                ),
                30,
                "the failure logged",
            )
            wait_for(
                lambda: "dead-letter flaky" in of_trace(collector.received(), ASYNC_TRACE),
                30,
                "the dead letter's span exported",
            )
            # The command line traces as serve does: its enqueue starts the trace.
            queued = eventwire("invoke", "flaky", "--async", "--payload", "{}", env=env)
            assert queued.returncode == 0, queued.stderr
            from_cli = queued.stdout.strip()

            def cli_trace() -> dict[str, ReceivedSpan]:
                for span in collector.received():
                    if span.attributes.get("eventwire.invocation_id") == from_cli:
                        return of_trace(collector.received(), span.trace_id)
                return {}

            wait_for(lambda: "attempt flaky" in cli_trace(), 30, "the CLI's invocation traced")
        finally:
            assert serve.stop() == 0, serve.log()
        spans = collector.received()
    assert any(
        f"exporting spans to OTLP at {collector.url}" in d["message"] for d in log_lines(serve)
    )

    synced = of_trace(spans, SYNC_TRACE)
    assert {"enqueue pooled", "attempt pooled", "invoke pooled", "settle pooled"} <= set(synced)
    assert synced["enqueue pooled"].parent_id == "b7ad6b7169203331"
    assert synced["attempt pooled"].parent_id == synced["enqueue pooled"].span_id
    assert {s.service for s in synced.values()} == {"eventwire"}
    # The worker process saw the invoke span as Lambda's trace header.
    invoke_span = synced["invoke pooled"]
    assert header == (
        f"Root=1-{SYNC_TRACE[:8]}-{SYNC_TRACE[8:]};Parent={invoke_span.span_id};Sampled=1"
    )

    failing = of_trace(spans, ASYNC_TRACE)
    assert failing["attempt flaky"].error and failing["invoke flaky"].error
    assert failing["attempt flaky"].attributes["eventwire.state"] == "failed"
    assert failing["dead-letter flaky"].parent_id == failing["attempt flaky"].span_id
    assert failed["trace_id"] == ASYNC_TRACE

    cli = cli_trace()
    assert cli["enqueue flaky"].parent_id == ""  # a root: the command started the trace
    assert cli["attempt flaky"].parent_id == cli["enqueue flaky"].span_id


def test_the_config_files_tracing_and_metrics_sections(store: Store, tmp_path: Path) -> None:
    """``tracing:`` and ``metrics:`` in ``eventwire.yaml`` do what the variables do."""
    with otlp_receiver() as collector:
        config = tmp_path / "eventwire.yaml"
        config.write_text(
            CONFIG
            + f"tracing: {{endpoint: '{collector.url}', service_name: orders, sample_ratio: 1}}\n"
            + "metrics: {listen: '127.0.0.1:0'}\n"
        )
        env = clean_env(
            **store.env(), EVENTWIRE_API_LISTEN="127.0.0.1:0", OTEL_BSP_SCHEDULE_DELAY="100"
        )
        serve = Serve(config, env, tmp_path / "serve.log")
        try:
            serve.wait_serving()
            api = serve.logged(r"Lambda API: listening on (http://\S+)/2015-03-31/", "the API")
            metrics = serve.logged(METRICS_URL, "the metrics URL from the file")
            invoke(api, "pooled", SYNC_TRACE)
            wait_for(
                lambda: "settle pooled" in of_trace(collector.received(), SYNC_TRACE),
                30,
                "the invocation's spans exported to the file's endpoint",
            )
            assert value(scrape(metrics), "eventwire_invocations_total", function="pooled") == 1
        finally:
            assert serve.stop() == 0, serve.log()
    assert {s.service for s in of_trace(collector.received(), SYNC_TRACE).values()} == {"orders"}
