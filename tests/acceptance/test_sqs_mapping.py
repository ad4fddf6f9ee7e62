"""``eventwire serve`` with SQS mappings from a YAML config, against moto's SQS server:
messages sent with boto3 are invoked and deleted; ``eventwire mappings`` shows and
controls the mapping; ``kill -9`` mid-batch loses no message; a Powertools handler's
partial batch responses are honoured."""

from __future__ import annotations

import json
import random
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import boto3
import pytest

from tests.acceptance.test_metrics import scrape
from tests.support.metrics import METRICS_URL, value
from tests.support.moto import REGION, MotoServer, SqsQueue, make_queue, moto_server  # noqa: F401
from tests.support.processes import Serve, clean_env, eventwire, eventwire_json, wait_for
from tests.support.sink import sink_entries


@pytest.fixture
def server(moto_server: MotoServer) -> MotoServer:  # noqa: F811
    return moto_server


def queue_of(server: MotoServer, **attributes: str) -> SqsQueue:
    import asyncio

    return asyncio.run(make_queue(server, attributes=attributes))


def sqs(server: MotoServer) -> Any:
    return boto3.client("sqs", region_name=REGION, endpoint_url=server.endpoint)


def send_numbered(server: MotoServer, queue: SqsQueue, numbers: range) -> None:
    client = sqs(server)
    for start in range(numbers.start, numbers.stop, 10):
        entries = [
            {"Id": str(n), "MessageBody": json.dumps({"n": n})}
            for n in range(start, min(start + 10, numbers.stop))
        ]
        assert not client.send_message_batch(QueueUrl=queue.url, Entries=entries).get("Failed")


def in_queue(server: MotoServer, queue: SqsQueue) -> int:
    """Messages not deleted: visible or in flight."""
    found = sqs(server).get_queue_attributes(
        QueueUrl=queue.url,
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    return int(found["ApproximateNumberOfMessages"]) + int(
        found["ApproximateNumberOfMessagesNotVisible"]
    )


def write_config(
    tmp_path: Path, queue: SqsQueue, handler: str, function: str = "", **mapping: Any
) -> Path:
    """A config whose function ``sink`` runs ``handler`` (``function``: more of its keys)."""
    config = tmp_path / "eventwire.yaml"
    extra = "".join(f"    {key}: {json.dumps(given)}\n" for key, given in mapping.items())
    config.write_text(
        f"""
functions:
  sink:
    handler: {handler}
{function}
mappings:
  - name: orders
    source: {queue.source_uri}
    function: sink
{extra}"""
    )
    return config


def sink_setup(
    server: MotoServer, tmp_path: Path, **mapping: Any
) -> tuple[SqsQueue, Path, Path, dict[str, str]]:
    """A queue (2 s visibility timeout), the sink file, a config whose ``sink`` function
    writes there, and the environment of ``serve``."""
    queue = queue_of(server, VisibilityTimeout="2")
    sink = tmp_path / "sink.jsonl"
    config = write_config(tmp_path, queue, "tests.mapping_handlers:sink", **mapping)
    return queue, sink, config, environment(tmp_path, server, MAPPING_TEST_SINK=str(sink))


def environment(tmp_path: Path, server: MotoServer, **extra: str) -> dict[str, str]:
    return clean_env(
        **server.environment,
        EVENTWIRE_DATABASE_URL=f"sqlite+aiosqlite:///{tmp_path / 'ew.db'}",
        EVENTWIRE_LEASE_GRACE="1s",
        **extra,
    )


def invoked(sink: Path) -> dict[int, list[tuple[str, str]]]:
    """Each message's ``n``, with the (message id, request id) of every invocation of it."""
    seen: dict[int, list[tuple[str, str]]] = defaultdict(list)
    for entry in sink_entries(sink):
        for message_id, body in entry["records"]:
            seen[json.loads(body)["n"]].append((message_id, entry["request"]))
    return seen


def test_serve_invokes_an_sqs_mapping_and_the_cli_shows_and_controls_it(
    server: MotoServer, tmp_path: Path
) -> None:
    queue = queue_of(server, VisibilityTimeout="5")
    sink = tmp_path / "sink.jsonl"
    config = write_config(
        tmp_path, queue, "tests.mapping_handlers:sink", batch_size=20, batch_window="200ms"
    )
    env = environment(tmp_path, server, MAPPING_TEST_SINK=str(sink))
    serve = Serve(config, env, tmp_path / "serve.log")
    try:
        serve.wait_serving()
        send_numbered(server, queue, range(60))
        wait_for(lambda: len(invoked(sink)) == 60, 30, "every message invoked")
        wait_for(lambda: in_queue(server, queue) == 0, 15, "every message deleted")

        def row() -> dict[str, Any]:
            rows = eventwire_json("mappings", "ls", env=env)
            [found] = [r for r in rows if r["name"] == "orders"]
            return dict(found)

        wait_for(lambda: row()["lag"] == 0, 10, "the lag reported")
        listed = row()
        assert (listed["kind"], listed["state"], listed["source"]) == (
            "sqs",
            "enabled",
            queue.source_uri,
        )
        table = eventwire("mappings", "ls", env=env).stdout
        assert "orders" in table and "sqs" in table
        seek = eventwire("mappings", "seek", "orders", "--to-timestamp", "2026-01-01", env=env)
        assert seek.returncode != 0
        assert "an SQS queue, which has no positions to seek to" in seek.stderr
        assert "Traceback" not in seek.stderr

        assert eventwire("mappings", "disable", "orders", env=env).returncode == 0
        wait_for(lambda: "mapping orders disabled" in serve.log(), 10, "the reader stopped")
        send_numbered(server, queue, range(60, 70))
        wait_for(lambda: row()["state"] == "disabled", 10)
        assert len(invoked(sink)) == 60
        assert eventwire("mappings", "enable", "orders", env=env).returncode == 0
        wait_for(lambda: len(invoked(sink)) == 70, 30, "the messages sent while disabled")
    finally:
        assert serve.stop() == 0, serve.log()
    assert all(len(runs) == 1 for runs in invoked(sink).values())


def test_kill_9_mid_batch_loses_no_message(server: MotoServer, tmp_path: Path) -> None:
    total = 300
    queue, sink, config, env = sink_setup(server, tmp_path, batch_size=10, max_concurrency=4)
    send_numbered(server, queue, range(total))
    rng = random.Random()
    progress = []
    # Killed right after an enqueue (its batches durable, their messages not deleted) …
    crash = Serve(
        config,
        {**env, "CRASH_AFTER_BATCHES": "6"},
        tmp_path / "serve-crash.log",
        program=[sys.executable, "-m", "tests.support.crash_serve"],
    )
    code = crash.process.wait(60)
    crash.stop()
    assert code == -9, crash.log()
    progress.append(len(invoked(sink)))
    # … and from outside, while batches run.
    serve = Serve(config, env, tmp_path / "serve-0.log")
    serve.wait_serving()
    target = len(invoked(sink)) + rng.randrange(20, 120)
    wait_for(lambda: len(invoked(sink)) >= target, 60, f"{target} messages")
    time.sleep(rng.uniform(0.0, 0.05))
    serve.kill()
    progress.append(len(invoked(sink)))
    assert progress[-1] < total, f"the kill came too late to matter: {progress}"
    serve = Serve(config, env, tmp_path / "serve-last.log")
    try:
        serve.wait_serving()
        wait_for(lambda: len(invoked(sink)) == total, 90, "every message")
        wait_for(lambda: in_queue(server, queue) == 0, 30, "every message deleted")
    finally:
        assert serve.stop() == 0, serve.log()
    seen = invoked(sink)
    assert sorted(seen) == list(range(total))
    # At least once: a duplicate is the same message (the same messageId) run again.
    for n, runs in seen.items():
        assert len({message_id for message_id, _ in runs}) == 1, (n, runs)
    twice = sum(1 for runs in seen.values() if len(runs) > 1)
    print(f"invoked after each kill: {progress}; run more than once: {twice}")


def test_a_powertools_batch_processor_runs_unchanged_and_its_failures_come_back(
    server: MotoServer, tmp_path: Path
) -> None:
    queue = queue_of(server, VisibilityTimeout="2")
    sink = tmp_path / "powertools.jsonl"
    # Powertools' BatchProcessor is a module global, made for Lambda's one invocation at
    # a time per process: the process invoker runs it so, as Lambda does.
    worker = (
        "    invoker: process\n"
        f"    environment: {{POWERTOOLS_TEST_SINK: {json.dumps(str(sink))}}}\n"
        "    concurrency: 2\n"
    )
    config = write_config(
        tmp_path,
        queue,
        "tests.powertools_handlers.handler",
        worker,
        batch_size=10,
        function_response_types=["ReportBatchItemFailures"],
    )
    env = environment(tmp_path, server)
    serve = Serve(config, env, tmp_path / "serve.log")

    def attempts() -> list[dict[str, Any]]:
        return list(sink_entries(sink))

    try:
        serve.wait_serving()
        send_numbered(server, queue, range(20))
        wait_for(lambda: {a["n"] for a in attempts() if a["ok"]} == set(range(20)), 30)
        wait_for(lambda: in_queue(server, queue) == 0, 15, "every message deleted")
    finally:
        assert serve.stop() == 0, serve.log()
    by_n: dict[int, list[str]] = defaultdict(list)
    for attempt in attempts():
        by_n[attempt["n"]].append(attempt["receives"])
    # Only the failed records came back (a second receive); the others ran once.
    assert {n: r for n, r in by_n.items() if n % 5 == 0} == {n: ["1", "2"] for n in range(0, 20, 5)}
    assert all(r == ["1"] for n, r in by_n.items() if n % 5), by_n
    assert "ValidationError" not in serve.log()


def test_an_sqs_mappings_figures_at_metrics(server: MotoServer, tmp_path: Path) -> None:
    queue = queue_of(server, VisibilityTimeout="5")
    config = write_config(
        tmp_path,
        queue,
        "tests.handlers:noop",
        batch_size=50,
        batch_window="100ms",
        filters=[{"body": {"n": [{"numeric": [">=", 20]}]}}],
    )
    env = environment(tmp_path, server)
    serve = Serve(config, env, tmp_path / "serve.log", "--metrics-listen", "127.0.0.1:0")
    try:
        serve.wait_serving()
        url = serve.logged(METRICS_URL, "the metrics URL")
        send_numbered(server, queue, range(100))

        def records() -> dict[str, float]:
            samples = scrape(url)
            return {
                outcome: value(samples, "eventwire_mapping_records_total", mapping="orders",
                               outcome=outcome)
                for outcome in ("polled", "filtered", "enqueued")
            }  # fmt: skip

        expected = {"polled": 100, "filtered": 20, "enqueued": 80}
        wait_for(lambda: records() == expected, 30, f"{expected}")
        wait_for(lambda: in_queue(server, queue) == 0, 15, "every message deleted")

        def caught_up() -> bool:
            samples = scrape(url)
            lag = value(samples, "eventwire_mapping_lag", mapping="orders")
            seen = ("eventwire_mapping_lag", frozenset({("mapping", "orders")})) in samples
            return seen and lag == 0

        wait_for(caught_up, 15, "the lag at zero")
        age = value(scrape(url), "eventwire_mapping_iterator_age_seconds", mapping="orders")
        assert 0 <= age < 60
    finally:
        assert serve.stop() == 0, serve.log()


def test_two_serve_processes_share_a_queue_and_one_dying_loses_nothing(
    server: MotoServer, tmp_path: Path
) -> None:
    total = 200
    queue, sink, config, env = sink_setup(server, tmp_path, batch_size=5, max_concurrency=6)
    first = Serve(config, env, tmp_path / "serve-a.log")
    second = Serve(config, env, tmp_path / "serve-b.log")
    try:
        first.wait_serving()
        second.wait_serving()
        send_numbered(server, queue, range(total))

        def pids() -> set[int]:
            return {entry["pid"] for entry in sink_entries(sink)}

        wait_for(lambda: len(pids()) == 2, 30, "both processes invoking")
        first.kill()
        wait_for(lambda: len(invoked(sink)) == total, 60, "every message")
        wait_for(lambda: in_queue(server, queue) == 0, 30, "every message deleted")
    finally:
        if first.process.poll() is None:
            first.kill()
        assert second.stop() == 0, second.log()
    seen = invoked(sink)
    assert sorted(seen) == list(range(total))
    for n, runs in seen.items():
        assert len({message_id for message_id, _ in runs}) == 1, (n, runs)
