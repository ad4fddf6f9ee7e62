"""A newcomer's machine: ``pip install eventwire`` with no extra, in a new virtual environment.

The quickstart runs on the embedded SQLite store with nothing else installed, and a
configuration (or URL) that needs a backend whose extra is missing stops ``serve`` with one
line naming the extra to install, never a traceback.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.processes import REPO, Serve, clean_env

SHIPPED = ("broker", "pollers", "invokers", "migrations", "pyproject.toml", "README.md")
EXTRA_MODULES = (
    "asyncpg", "redis", "aiokafka", "aio_pika", "aiohttp", "watchfiles", "aiobotocore", "botocore"
)  # fmt: skip
HELLO = "functions:\n  hello: {handler: examples.functions:hello}\n"


@pytest.fixture(scope="module")
def core(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The ``bin`` of a new virtual environment with Eventwire installed, extras left out
    (from a copy of the source, so the build leaves nothing in the checkout)."""
    root = tmp_path_factory.mktemp("fresh")
    source = root / "source"
    source.mkdir()
    for name in SHIPPED:
        if (REPO / name).is_dir():
            shutil.copytree(
                REPO / name, source / name, ignore=shutil.ignore_patterns("__pycache__")
            )
        else:
            shutil.copy2(REPO / name, source / name)
    subprocess.run([sys.executable, "-m", "venv", str(root / "venv")], check=True)
    bin = root / "venv" / "bin"
    installed = subprocess.run(
        [bin / "python", "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
         str(source)],
        capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert installed.returncode == 0, installed.stderr
    return bin


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    """Where the user runs ``eventwire``: the examples beside it, as in a checkout."""
    shutil.copytree(REPO / "examples", tmp_path / "examples")
    return tmp_path


def run(core: Path, workdir: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [core / "eventwire", *args],
        cwd=workdir,
        env=clean_env(**env),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_no_extra_is_installed(core: Path) -> None:
    """The premise of the tests below: the environment has no backend's library."""
    probe = "import importlib.util as u, sys; print([m for m in sys.argv[1:] if u.find_spec(m)])"
    found = subprocess.run(
        [core / "python", "-c", probe, *EXTRA_MODULES], capture_output=True, text=True, check=True
    )
    assert found.stdout.strip() == "[]"


def test_the_quickstart_runs_with_the_core_alone(core: Path, workdir: Path) -> None:
    version = run(core, workdir, "--version")
    assert version.returncode == 0 and version.stdout.startswith("eventwire "), version.stderr
    server = Serve(
        Path("examples/quickstart.yaml"),
        clean_env(),
        workdir / "serve.log",
        program=[str(core / "eventwire")],
        cwd=workdir,
    )
    try:
        server.wait_serving()
        done = run(core, workdir, "invoke", "hello", "--payload", '{"name": "ci"}')
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout)["message"] == "hello, ci"
    finally:
        code = server.stop()
    assert code == 0, server.log()
    assert "Traceback" not in server.log()


MISSING = [
    pytest.param(
        "mappings:\n  - {name: k, source: 'kafka://127.0.0.1:9/t', function: hello}\n",
        {},
        "kafka",
        id="kafka-mapping",
    ),
    pytest.param(
        "mappings:\n  - {name: r, source: 'amqp://guest:guest@127.0.0.1:9/%2F?queue=q', "
        "function: hello}\n",
        {},
        "rabbitmq",
        id="rabbitmq-mapping",
    ),
    pytest.param(
        "mappings:\n  - {name: s, source: 'redis://127.0.0.1:9/0?stream=s', function: hello}\n",
        {},
        "redis",
        id="redis-stream-mapping",
    ),
    pytest.param(
        "mappings:\n  - {name: q, source: 'sqs://127.0.0.1:9/123456789012/q', function: hello}\n",
        {},
        "aws",
        id="sqs-mapping",
    ),
    pytest.param("", {"EVENTWIRE_QUEUE_URL": "redis://127.0.0.1:9/0"}, "redis", id="redis-queue"),
    pytest.param(
        "",
        {"EVENTWIRE_DATABASE_URL": "postgresql+asyncpg://eventwire@127.0.0.1:9/eventwire"},
        "postgres",
        id="postgres-store",
    ),
    pytest.param(
        "  p: {invoker: process, handler: examples.functions.hello}\n",
        {},
        "process",
        id="process-invoker",
    ),
    pytest.param(
        "  h: {invoker: http, url: 'http://127.0.0.1:9/'}\n", {}, "http", id="http-invoker"
    ),
    pytest.param("", {"EVENTWIRE_API_LISTEN": "127.0.0.1:0"}, "http", id="lambda-api"),
    pytest.param(
        "  k2: {handler: examples.functions:hello, on_success: 'kafka://127.0.0.1:9/out'}\n",
        {},
        "kafka",
        id="kafka-destination",
    ),
    pytest.param(
        "  w2: {handler: examples.functions:hello, on_failure: 'https://127.0.0.1:9/hook'}\n",
        {},
        "http",
        id="webhook-destination",
    ),
    pytest.param(
        "  q: {handler: examples.functions:hello, on_success: 'sqs://orders'}\n",
        {},
        "aws",
        id="sqs-destination",
    ),
    pytest.param(
        "  t: {handler: examples.functions:hello, dead_letter: "
        "'arn:aws:sns:eu-west-1:123456789012:alerts'}\n",
        {},
        "aws",
        id="sns-dead-letter",
    ),
    pytest.param(
        "object_notifications:\n  - {name: up, source: webhook, token_env: TOKEN, "
        "function: hello}\n",
        {"TOKEN": "t"},
        "notifications",
        id="notification-webhook",
    ),
    pytest.param(
        "object_notifications:\n  - {name: d, source: 'dir:///tmp', function: hello}\n",
        {},
        "notifications",
        id="notification-directory",
    ),
    pytest.param(
        "", {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9"}, "tracing", id="tracing"
    ),
]


@pytest.mark.parametrize(("config", "env", "extra"), MISSING)
def test_a_missing_extra_is_one_line_naming_it(
    core: Path, workdir: Path, config: str, env: dict[str, str], extra: str
) -> None:
    (workdir / "eventwire.yaml").write_text(HELLO + config)
    done = run(core, workdir, "serve", "-c", "eventwire.yaml", **env)
    assert done.returncode == 2, (done.stdout, done.stderr)
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), done.stderr
    assert f"pip install 'eventwire[{extra}]'" in lines[0]


def test_commands_that_need_no_backend_work_without_extras(core: Path, workdir: Path) -> None:
    """Reading the config and previewing a schedule need no store and no extra."""
    (workdir / "eventwire.yaml").write_text(
        HELLO + "schedules:\n  daily: {expression: 'cron(0 9 * * ? *)', function: hello}\n"
    )
    validated = run(core, workdir, "config", "validate", "-c", "eventwire.yaml")
    assert validated.returncode == 0, validated.stderr
    preview = run(core, workdir, "schedules", "next", "-c", "eventwire.yaml", "daily", "--json")
    assert preview.returncode == 0, preview.stderr
    assert [slot["utc"][11:] for slot in json.loads(preview.stdout)] == ["09:00:00Z"] * 5
    assert not (workdir / "eventwire.db").exists()
