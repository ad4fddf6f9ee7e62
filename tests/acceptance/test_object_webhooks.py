"""MinIO and Ceph RGW POST their notifications to ``eventwire serve``; functions get S3 events."""

from __future__ import annotations

import base64
import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.s3_samples import CEPH_EVENT_RECORD, MINIO_WEBHOOK_DELETE, MINIO_WEBHOOK_PUT
from tests.support.processes import Serve, clean_env, eventwire, eventwire_json, wait_for

TOKEN = "s3cr3t-token-for-uploads"
CONFIG = """
functions:
  thumbs:
    handler: tests.handlers:echo
object_notifications:
  - name: uploads
    source: webhook
    token_env: UPLOADS_TOKEN
    events: ["s3:ObjectCreated:*"]
    suffix: .mtl
    function: thumbs
  - name: ceph
    source: webhook
    token_env: CEPH_TOKEN
    function: thumbs
"""


@dataclass
class Running:
    url: str
    env: dict[str, str]
    serve: Serve


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Running]:
    config = tmp_path / "eventwire.yaml"
    config.write_text(CONFIG)
    env = clean_env(
        EVENTWIRE_DATABASE_URL=f"sqlite+aiosqlite:///{tmp_path / 'eventwire.db'}",
        EVENTWIRE_HTTP_LISTEN="127.0.0.1:0",
        UPLOADS_TOKEN=TOKEN,
        CEPH_TOKEN="ceph-token",
    )
    serve = Serve(config, env, tmp_path / "serve.log")
    try:
        serve.wait_serving()
        url = serve.logged(r"listening on (http://\S+)/notifications/", "the listener's URL")
        yield Running(url, env, serve)
    finally:
        serve.stop()


def post(
    url: str, body: str | bytes, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, Any]]:
    data = body.encode() if isinstance(body, str) else body
    request = urllib.request.Request(url, data=data, method="POST", headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}


def invocations(env: dict[str, str]) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = eventwire_json("invocations", "ls", env=env)
    return rows


def test_minio_notification_invokes_the_function_once(served: Running) -> None:
    url = f"{served.url}/notifications/uploads"

    status, answer = post(url, MINIO_WEBHOOK_PUT, bearer(TOKEN))
    assert status == 200, answer
    assert (answer["records"], answer["matched"], answer["enqueued"]) == (1, 1, 1)
    [invocation_id] = answer["invocations"]
    # 200 came after the enqueue: the invocation is in the store already.
    assert [row["id"] for row in invocations(served.env)] == [invocation_id]

    again_status, again = post(url, MINIO_WEBHOOK_PUT, bearer(TOKEN))  # MinIO retried
    assert again_status == 200
    assert (again["enqueued"], again["duplicates"], again["invocations"]) == (
        0,
        1,
        [invocation_id],
    )

    removed_status, removed = post(url, MINIO_WEBHOOK_DELETE, bearer(TOKEN))
    assert removed_status == 200 and removed["matched"] == 0  # only ObjectCreated:* wanted

    def finished() -> dict[str, Any] | None:
        rows = invocations(served.env)
        return rows[0] if rows and rows[0]["state"] == "succeeded" else None

    row = wait_for(finished, 30, "the invocation to succeed")
    assert len(invocations(served.env)) == 1
    event = row["result"]  # the echo handler returns the event it got
    assert event == row["payload"]
    [record] = event["Records"]
    assert record["eventSource"] == "aws:s3" and record["eventName"] == "ObjectCreated:Put"
    assert record["s3"]["bucket"]["name"] == "vd-main"
    assert record["s3"]["object"] == {
        "key": "Tile_%2B002_%2B002.mtl",
        "size": 210,
        "eTag": "775ff5def9531772a2bb12853cd46fce",
        "sequencer": "17A76FE05CF3469B",
    }
    assert row["origin"] == "notification"
    assert row["source"]["notification"] == "uploads"


def test_ceph_notification_with_token_in_the_url_or_basic_auth(served: Running) -> None:
    status, answer = post(f"{served.url}/notifications/ceph?token=ceph-token", CEPH_EVENT_RECORD)
    assert status == 200 and answer["enqueued"] == 1, answer

    basic = base64.b64encode(b"rgw:ceph-token").decode()
    status, answer = post(
        f"{served.url}/notifications/ceph", CEPH_EVENT_RECORD, {"Authorization": f"Basic {basic}"}
    )
    assert status == 200 and answer["duplicates"] == 1, answer

    [row] = invocations(served.env)
    record = row["payload"]["Records"][0]
    assert record["s3"]["object"]["size"] == 1024 and record["eventName"] == "ObjectCreated:Put"


def test_forged_token_is_401_malformed_is_400_and_nothing_is_enqueued(served: Running) -> None:
    url = f"{served.url}/notifications/uploads"
    for headers in (
        bearer("s3cr3t-token-for-uploadz"),
        bearer("ceph-token"),  # another notification's token
        {},
        {"Authorization": "Basic " + base64.b64encode(b"x:wrong").decode()},
    ):
        status, answer = post(url, MINIO_WEBHOOK_PUT, headers)
        assert status == 401, (headers, answer)
        assert answer == {"error": "missing or wrong token"}
    status, _ = post(f"{url}?token=nope", MINIO_WEBHOOK_PUT)
    assert status == 401
    assert invocations(served.env) == []
    assert "rejected a request with a wrong token" in served.serve.log()

    # A malformed document is 400 with the reason, and nothing is enqueued either.
    status, answer = post(url, "{oops", bearer(TOKEN))
    assert status == 400 and answer["error"].startswith("not an S3 event notification document")

    no_key = json.loads(MINIO_WEBHOOK_PUT)
    del no_key["Records"][0]["s3"]["object"]["key"]
    status, answer = post(url, json.dumps(no_key), bearer(TOKEN))
    assert status == 400
    assert answer["error"].endswith("Records[0].s3.object.key: missing")

    status, answer = post(f"{served.url}/notifications/nope", MINIO_WEBHOOK_PUT, bearer(TOKEN))
    assert status == 404 and "nope" in answer["error"]
    assert invocations(served.env) == []


def test_serve_without_the_token_variable_says_so(tmp_path: Path) -> None:
    config = tmp_path / "eventwire.yaml"
    config.write_text(CONFIG)
    env = clean_env(
        EVENTWIRE_DATABASE_URL=f"sqlite+aiosqlite:///{tmp_path / 'eventwire.db'}",
        EVENTWIRE_HTTP_LISTEN="127.0.0.1:0",
        CEPH_TOKEN="x",
    )
    done = eventwire("serve", "-c", str(config), env=env)
    assert done.returncode == 2
    assert "UPLOADS_TOKEN (its token_env) is not set" in done.stderr
    assert "Traceback" not in done.stderr
