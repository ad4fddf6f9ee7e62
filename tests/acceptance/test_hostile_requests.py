"""Hostile HTTP at a running ``serve``: the Invoke API, function URLs and a notification
webhook get
malformed, oversized and strange requests (hypothesis builds them: names with path
traversal and control characters, unknown qualifiers and invocation types, huge and
garbled headers, bodies that are not JSON or are nested past any decoder). Every one gets
an answer below 500, the server keeps serving, and every event the API accepted (202) is
in the store: none is lost.

Requests go over a raw socket, so that nothing on the client side tidies them up.
"""

from __future__ import annotations

import socket
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support.processes import Serve, clean_env

TOKEN = "hostile-test-token"
CONFIG = """
functions:
  echo: {handler: tests.handlers:echo}
  site:
    handler: tests.handlers:echo
    function_url: {auth: NONE, cors: {allow_origins: ["https://a.example"], allow_methods: ["*"]}}
object_notifications:
  - {name: uploads, source: webhook, token_env: UPLOADS_TOKEN, function: echo}
limits: {async_payload: 4KB, sync_payload: 8KB}
"""


@dataclass
class Running:
    api: tuple[str, int]
    webhooks: tuple[str, int]
    database: Path
    accepted: list[str] = field(default_factory=list)


def address(url: str) -> tuple[str, int]:
    host, port = url.removeprefix("http://").rsplit(":", 1)
    return host, int(port)


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    tmp = tmp_path_factory.mktemp("hostile")
    config = tmp / "eventwire.yaml"
    config.write_text(CONFIG)
    database = tmp / "eventwire.db"
    env = clean_env(
        EVENTWIRE_DATABASE_URL=f"sqlite+aiosqlite:///{database}",
        EVENTWIRE_API_LISTEN="127.0.0.1:0",
        EVENTWIRE_HTTP_LISTEN="127.0.0.1:0",
        UPLOADS_TOKEN=TOKEN,
    )
    serve = Serve(config, env, tmp / "serve.log")
    try:
        serve.wait_serving()
        api = serve.logged(r"Lambda API: listening on (http://\S+)/2015-03-31/", "the API")
        hooks = serve.logged(r"listening on (http://\S+)/notifications/", "the webhooks")
        yield Running(address(api), address(hooks), database)
    finally:
        log = serve.log()
        assert serve.stop() == 0, log
        assert "Traceback" not in log, log


def exchange(where: tuple[str, int], request: bytes) -> tuple[int, bytes]:
    """Send ``request`` as it is; the status (0: no answer) and the head of the answer."""
    with socket.create_connection(where, timeout=10) as sock:
        sock.sendall(request)
        answer = b""
        while b"\r\n\r\n" not in answer:
            chunk = sock.recv(65536)
            if not chunk:
                break
            answer += chunk
        rest = answer
        try:
            while chunk := sock.recv(65536):
                rest += chunk
        except TimeoutError:
            pass
    line = answer.split(b"\r\n", 1)[0].split()
    return (int(line[1]) if len(line) > 1 and line[1].isdigit() else 0), rest


def request(method: str, target: str, headers: list[tuple[str, str]], body: bytes) -> bytes:
    head = [f"{method} {target} HTTP/1.1", "Host: eventwire", "Connection: close"]
    head += [f"{name}: {value}" for name, value in headers]
    head.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(head) + "\r\n\r\n").encode("utf-8", "surrogateescape") + body


NAMES = st.one_of(
    st.sampled_from(["echo", "echo:$LATEST", "echo:3", "../echo", "..%2Fecho", "%00", "nope",
                     "arn:aws:lambda:local:000000000000:function:echo", "a" * 300]),
    st.text(min_size=1, max_size=80),
)  # fmt: skip
HEADER_VALUES = st.one_of(
    st.sampled_from(["Event", "RequestResponse", "DryRun", "Tail", "", "x" * 9000]),
    st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=200),
)
HEADERS = st.lists(
    st.tuples(
        st.sampled_from([
            "X-Amz-Invocation-Type", "X-Amz-Log-Type", "X-Eventwire-Idempotency-Key",
            "traceparent", "Content-Type", "X-Amz-Client-Context", "Authorization",
        ]),
        HEADER_VALUES,
    ),
    max_size=4,
)  # fmt: skip
BODIES = st.one_of(
    st.binary(max_size=300),
    st.sampled_from([b"", b"{}", b"null", b'{"a": 1}', b"[" * 5000 + b"]" * 5000,
                     b'"' + b"x" * 9000 + b'"', b"\xff\xfe", b'{"a": NaN}']),
    st.recursive(st.sampled_from([b"1", b'"s"', b"true"]),
                 lambda inner: st.builds(lambda xs: b"[" + b",".join(xs) + b"]",
                                         st.lists(inner, max_size=3))),
)  # fmt: skip
QUALIFIERS = st.one_of(st.none(), st.text(max_size=20))


@settings(
    max_examples=250, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    method=st.sampled_from(["POST", "GET", "PUT", "DELETE", "PATCH"]),
    name=NAMES,
    qualifier=QUALIFIERS,
    headers=HEADERS,
    body=BODIES,
)
def test_the_invoke_api_answers_every_request_below_500(
    running: Running,
    method: str,
    name: str,
    qualifier: str | None,
    headers: list[tuple[str, str]],
    body: bytes,
) -> None:
    target = f"/2015-03-31/functions/{quote(name, safe='')}/invocations"
    if qualifier is not None:
        target += f"?Qualifier={quote(qualifier, safe='')}"
    status, answer = exchange(running.api, request(method, target, headers, body))
    assert 0 < status < 500, (status, answer[:500])
    if status == 202:
        head = answer.split(b"\r\n\r\n", 1)[0].decode("latin-1").lower()
        [line] = [h for h in head.split("\r\n") if h.startswith("x-eventwire-invocation-id:")]
        running.accepted.append(line.split(":", 1)[1].strip())


URL_HEADERS = st.lists(
    st.tuples(
        st.sampled_from([
            "Cookie", "Origin", "Access-Control-Request-Method", "Access-Control-Request-Headers",
            "Content-Type", "traceparent", "Authorization", "X-Repeated", "X-Repeated",
        ]),
        st.one_of(
            st.sampled_from(["https://a.example", "POST", "a=1; b", ";;=", "text/plain",
                             "application/json", "image/png", "x" * 9000, ""]),
            st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=200),
        ),
    ),
    max_size=5,
)  # fmt: skip
URL_PATHS = st.one_of(
    st.sampled_from(["", "/", "/a/b", "/../../etc/passwd", "/%00", "/%zz", "//x", "/a?b"]),
    st.text(max_size=60),
)


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    method=st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD"]),
    name=st.one_of(st.sampled_from(["site", "echo", "nope", "..", "%00"]), st.text(max_size=30)),
    path=URL_PATHS,
    query=st.one_of(st.just(""), st.text(max_size=60)),
    headers=URL_HEADERS,
    body=BODIES,
)
def test_function_urls_answer_every_request_below_500(
    running: Running,
    method: str,
    name: str,
    path: str,
    query: str,
    headers: list[tuple[str, str]],
    body: bytes,
) -> None:
    target = f"/fn/{quote(name, safe='')}{quote(path, safe='/%')}"
    if query:
        target += f"?{quote(query, safe='=&%')}"
    status, answer = exchange(running.api, request(method, target, headers, body))
    assert 0 < status < 500, (status, answer[:500])


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    path=st.one_of(st.just("uploads"), st.text(max_size=30)),
    token=st.one_of(st.just(TOKEN), st.text(max_size=30)),
    body=BODIES,
    content_type=HEADER_VALUES,
)
def test_the_webhooks_answer_every_request_below_500(
    running: Running, path: str, token: str, body: bytes, content_type: str
) -> None:
    target = f"/notifications/{quote(path, safe='')}?token={quote(token, safe='')}"
    headers = [("Content-Type", content_type)]
    status, answer = exchange(running.webhooks, request("POST", target, headers, body))
    assert 0 < status < 500, (status, answer[:500])


def test_afterwards_it_still_serves_and_lost_nothing_it_accepted(running: Running) -> None:
    status, _ = exchange(running.api, request("GET", "/2015-03-31/functions", [], b""))
    assert status == 200
    with sqlite3.connect(running.database) as conn:
        stored = {row[0] for row in conn.execute("SELECT id FROM invocations")}
    assert set(running.accepted) <= stored, set(running.accepted) - stored
