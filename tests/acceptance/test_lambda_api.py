"""``eventwire serve`` with ``EVENTWIRE_API_LISTEN`` takes AWS SDK calls to Lambda's Invoke API."""

from __future__ import annotations

import base64
import json
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.lambda_client import lambda_client
from tests.support.processes import Serve, clean_env, eventwire, eventwire_json, wait_for

CONFIG = """
functions:
  says:
    handler: tests.handlers:says
"""


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[Any, dict[str, str]]]:
    """A boto3 Lambda client of a running ``serve``, and that serve's environment."""
    config = tmp_path / "eventwire.yaml"
    config.write_text(CONFIG)
    env = clean_env(EVENTWIRE_DATABASE_URL=f"sqlite+aiosqlite:///{tmp_path / 'eventwire.db'}")
    serve = Serve(config, env, tmp_path / "serve.log", "--api-listen", "127.0.0.1:0")
    try:
        serve.wait_serving()
        url = serve.logged(r"Lambda API: listening on (http://\S+)/2015-03-31/", "the API URL")
        client = lambda_client(url)
        yield client, env
    finally:
        serve.stop()


def test_an_sdk_invoke_runs_the_function_and_tails_its_log(
    served: tuple[Any, dict[str, str]],
) -> None:
    client, _env = served
    answer = client.invoke(FunctionName="says", Payload=b'{"word": "hello"}', LogType="Tail")
    assert answer["StatusCode"] == 200
    assert json.loads(answer["Payload"].read()) == "hello"
    assert base64.b64decode(answer["LogResult"]).decode().strip() == "said hello"


def test_an_sdk_event_invoke_is_in_the_history_once_it_ran(
    served: tuple[Any, dict[str, str]],
) -> None:
    client, env = served
    answer = client.invoke(FunctionName="says", InvocationType="Event", Payload=b'{"word": "hi"}')
    assert answer["StatusCode"] == 202
    invocation = answer["ResponseMetadata"]["RequestId"]

    def finished() -> dict[str, Any] | None:
        shown: dict[str, Any] = eventwire_json("invocations", "show", invocation, env=env)
        return shown if shown["state"] == "succeeded" else None

    shown = wait_for(finished, 20, "the invocation to run")
    assert (shown["origin"], shown["result"]) == ("api", "hi")


@pytest.mark.parametrize(("listen", "given_as"), [("nowhere", "env"), ("in-use", "flag")])
def test_a_bad_listen_address_stops_serve_with_the_setting_named(
    tmp_path: Path, listen: str, given_as: str
) -> None:
    config = tmp_path / "eventwire.yaml"
    config.write_text(CONFIG)
    env = clean_env(EVENTWIRE_DATABASE_URL=f"sqlite+aiosqlite:///{tmp_path / 'e.db'}")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        address = "nowhere" if listen == "nowhere" else f"127.0.0.1:{taken.getsockname()[1]}"
        flags = ["--api-listen", address] if given_as == "flag" else []
        if given_as == "env":
            env["EVENTWIRE_API_LISTEN"] = address
        done = eventwire("serve", "-c", str(config), *flags, env=env)
    assert done.returncode == 2
    assert "EVENTWIRE_API_LISTEN" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert "Traceback" not in done.stderr
