"""Runtimes in three languages speak the Runtime API that ``eventwire serve`` offers.

One ``serve`` runs the packaged Python bootstrap, a shell runtime built on
curl and a Node.js runtime, plus Python functions that time out, run out of
memory and crash; each is driven through the ``eventwire`` command line.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.acceptance.test_metrics import scrape
from tests.support.metrics import METRICS_URL, value
from tests.support.processes import REPO, Serve, clean_env, eventwire, wait_for

RUNTIMES = REPO / "tests" / "runtimes"

CONFIG = """
functions:
  echo:
    invoker: process
    handler: tests.runtime_handlers.echo
    environment: {{GREETING: hi}}
    warm: 1
    concurrency: 2
  shell:
    invoker: process
    command: ["{runtimes}/bootstrap.sh"]
    handler: function.handler
  node:
    invoker: process
    command: ["node", "{runtimes}/runtime.js"]
    handler: index.greet
  hang:
    invoker: process
    handler: tests.runtime_handlers.hang
    timeout: 1s
  hungry:
    invoker: process
    handler: tests.runtime_handlers.allocate
    memory: 128MB
  crash:
    invoker: process
    handler: tests.runtime_handlers.crash_once
    retry: {{backoff: {{initial: 100ms}}}}
"""


@dataclass
class Running:
    env: dict[str, str]
    serve: Serve
    tmp: Path
    metrics_url: str

    def cli(self, *args: str) -> tuple[int, str]:
        done = eventwire(*args, env=self.env)
        return done.returncode, done.stdout + done.stderr

    def invoke(self, function: str, payload: dict[str, Any]) -> tuple[int, Any]:
        done = eventwire(
            "invoke", function, "--json", "--payload", json.dumps(payload), env=self.env
        )
        return done.returncode, json.loads(done.stdout)


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    if shutil.which("curl") is None or shutil.which("node") is None:
        if os.environ.get("CI"):
            pytest.fail("curl and node are needed for the runtime tests")
        pytest.skip("curl and node are needed for the runtime tests")
    tmp = tmp_path_factory.mktemp("runtimes")
    config = tmp / "eventwire.yaml"
    config.write_text(CONFIG.format(runtimes=RUNTIMES))
    env = clean_env(EVENTWIRE_DATABASE_URL=f"sqlite+aiosqlite:///{tmp / 'eventwire.db'}")
    serve = Serve(config, env, tmp / "serve.log", "--metrics-listen", "127.0.0.1:0")
    try:
        serve.wait_serving()
        yield Running(env, serve, tmp, serve.logged(METRICS_URL, "the metrics URL"))
    finally:
        assert serve.stop() == 0, serve.log()


def test_the_packaged_python_bootstrap_runs_a_handler(running: Running) -> None:
    code, shown = running.invoke("echo", {"name": "x"})
    assert code == 0, shown
    result = shown["result"]
    assert result["event"] == {"name": "x"}
    assert result["request_id"] == shown["id"]
    assert result["function_name"] == "echo"
    assert result["memory"] == "128"
    assert 0 < result["remaining_ms"] <= 3000
    assert result["env"] == {
        "GREETING": "hi",
        "_HANDLER": "tests.runtime_handlers.echo",
        "LAMBDA_TASK_ROOT": str(REPO),
    }

    code, text = running.cli("logs", "echo")
    assert code == 0, text
    assert f"{shown['id']} echoing {{'name': 'x'}}" in text

    code, text = running.cli("invocations", "show", shown["id"])
    assert code == 0 and "attempt 1 log:" in text and "echoing {'name': 'x'}" in text, text


def test_a_shell_runtime_built_on_curl(running: Running) -> None:
    code, shown = running.invoke("shell", {"n": 1})
    assert code == 0, shown
    assert shown["result"] == {"runtime": "shell", "handler": "function.handler", "event": {"n": 1}}


def test_a_nodejs_runtime_and_its_errors(running: Running) -> None:
    code, shown = running.invoke("node", {"name": "x"})
    assert code == 0, shown
    assert shown["result"] == {
        "runtime": "node",
        "greeting": "hello, x",
        "requestId": shown["id"],
    }
    code, failed = running.invoke("node", {"name": "y", "fail": True})
    assert code == 1
    assert failed["error"] == {"errorType": "GreetingError", "errorMessage": "cannot greet y"}


def test_a_timeout_kills_the_process_and_its_children(running: Running) -> None:
    pids_file = running.tmp / "pids"
    code, shown = running.invoke("hang", {"pids": str(pids_file)})
    assert code == 1
    assert shown["error"] == {
        "errorType": "Task.TimedOut",
        "errorMessage": "Task timed out after 1.00 seconds",
    }
    pids = [int(pid) for pid in pids_file.read_text().split()]
    assert len(pids) == 2  # the worker and the child it started
    wait_for(lambda: not any(_alive(pid) for pid in pids), 5, "the processes to be gone")


def test_a_process_past_its_memory_fails_with_out_of_memory(running: Running) -> None:
    code, small = running.invoke("hungry", {"mb": 16})
    assert (code, small["result"]) == (0, 16 * 1024 * 1024)
    code, shown = running.invoke("hungry", {"mb": 512})
    assert code == 1
    assert shown["error"]["errorType"] == "Runtime.OutOfMemory"


def test_a_crash_mid_invocation_is_retried_by_a_new_process(running: Running) -> None:
    marker = running.tmp / "crashed"
    payload = json.dumps({"marker": str(marker)})
    done = eventwire("invoke", "crash", "--async", "--payload", payload, env=running.env)
    assert done.returncode == 0, done.stderr
    invocation = done.stdout.strip()

    def finished() -> dict[str, Any] | None:
        code, text = running.cli("invocations", "show", invocation, "--json")
        assert code == 0, text
        shown: dict[str, Any] = json.loads(text)
        return shown if shown["state"] in ("succeeded", "failed") else None

    shown = wait_for(finished, 20, "the retry to finish")
    assert shown["state"] == "succeeded"
    first, second = shown["attempt_records"]
    assert first["error_type"] == "Runtime.ExitError"
    assert "exit status 3" in first["error_message"]
    assert first["log_excerpt"] == "crashing"
    assert second["status"] == "success"
    crashed_pid = int(marker.read_text())
    assert shown["result"].startswith("survived in ")
    assert int(shown["result"].split()[-1]) != crashed_pid  # a new process answered


def test_functions_ls_shows_pools_and_durations(running: Running) -> None:
    def echo_row() -> dict[str, Any] | None:
        code, text = running.cli("functions", "ls", "--json")
        assert code == 0, text
        row: dict[str, Any] = {r["name"]: r for r in json.loads(text)}["echo"]
        return row if row["pool"] and row["duration_p50_ms"] is not None else None

    row = wait_for(echo_row, 10, "echo's pool figures")
    assert row["invoker"] == "process"
    assert row["pool"]["idle"] + row["pool"]["busy"] >= 1  # the warm process
    assert row["pool"]["cold_starts"] >= 1
    assert row["duration_p99_ms"] >= row["duration_p50_ms"] > 0


def test_metrics_count_cold_starts_and_processes_killed_for_timeout_and_memory(
    running: Running,
) -> None:
    def killed(function: str, reason: str) -> float:
        samples = scrape(running.metrics_url)
        name = "eventwire_workers_killed_total"
        return value(samples, name, function=function, reason=reason)

    before = killed("hang", "timeout"), killed("hungry", "memory")
    assert running.invoke("hang", {"pids": str(running.tmp / "pids-metrics")})[0] == 1
    assert running.invoke("hungry", {"mb": 512})[0] == 1
    wait_for(
        lambda: (
            (killed("hang", "timeout"), killed("hungry", "memory"))
            == (before[0] + 1, before[1] + 1)
        ),
        10,
        "a kill for timeout and one for memory",
    )
    samples = scrape(running.metrics_url)
    assert value(samples, "eventwire_cold_starts_total", function="echo") >= 1  # warm: 1
    assert value(samples, "eventwire_init_duration_seconds_count", function="echo") >= 1
    assert killed("echo", "exit") == 0

    def warm() -> float:
        samples = scrape(running.metrics_url)
        return sum(
            value(samples, "eventwire_pool_workers", function="echo", state=state)
            for state in ("idle", "busy")
        )

    wait_for(lambda: warm() >= 1, 10, "echo's warm process in eventwire_pool_workers")


def test_logs_follow_prints_new_output_tagged_with_request_ids(running: Running) -> None:
    out = running.tmp / "follow.out"
    with out.open("w") as sink:
        follower = subprocess.Popen(
            [sys.executable, "-m", "broker.cli", "logs", "echo", "--follow", "-n", "0"],
            env=running.env,
            cwd=REPO,
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
        try:
            wait_for(lambda: "following echo" in out.read_text(), 10, "logs --follow to start")
            code, shown = running.invoke("echo", {"follow": "me"})
            assert code == 0, shown
            line = f"{shown['id']} echoing {{'follow': 'me'}}"
            wait_for(lambda: line in out.read_text(), 10, "the followed line")
        finally:
            follower.send_signal(signal.SIGINT)
            follower.wait(10)
    followed = out.read_text()
    assert "echoing {'name': 'x'}" not in followed  # -n 0: only what came after
    assert "Traceback" not in followed


def _alive(pid: int) -> bool:
    """Whether ``pid`` still runs (a zombie waiting to be reaped does not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"
