"""Function URLs over plain HTTP: requests to ``/fn/NAME/...`` reach handlers as Lambda's
2.0 event, results come back as Lambda maps them, CORS is answered from the config, and
``AWS_IAM`` URLs want a signature by a key allowed ``lambda:InvokeFunctionUrl``."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from broker.api.lambda_api import LambdaApi
from broker.functions.invoking import wait_finished
from broker.models import State
from broker.store.history import get_invocation
from tests.support.service import running_service
from tests.support.stores import store_for
from tests.url_handlers import PNG

PUBLIC = {"auth": "NONE"}
CORS = {
    "allow_origins": ["https://shop.example"],
    "allow_methods": ["GET", "POST"],
    "allow_headers": ["content-type", "x-token"],
    "expose_headers": ["x-custom"],
    "max_age": 300,
    "allow_credentials": True,
}
FUNCTIONS = {
    "echo": {"handler": "tests.handlers:echo", "function_url": {"auth": "NONE", "cors": CORS}},
    "custom": {"handler": "tests.url_handlers:custom", "function_url": PUBLIC},
    "image": {"handler": "tests.url_handlers:image", "function_url": PUBLIC},
    "greeting": {"handler": "tests.url_handlers:greeting", "function_url": PUBLIC},
    "malformed": {"handler": "tests.url_handlers:malformed", "function_url": PUBLIC},
    "boom": {"handler": "tests.handlers:boom", "function_url": PUBLIC},
    "shop": {"handler": "tests.url_handlers:shop", "function_url": PUBLIC},
    "private": {"handler": "tests.handlers:echo", "function_url": {"auth": "AWS_IAM"}},
    "internal": {"handler": "tests.handlers:echo"},
    "stopped": {
        "handler": "tests.handlers:echo",
        "function_url": PUBLIC,
        "reserved_concurrency": 0,
    },
}
KEYS: dict[str, Any] = {
    "keys": [
        {
            "id": "AKIAURLCALLER",
            "secret_env": "EVENTWIRE_TEST_URL_SECRET",
            "allow": [{"actions": ["lambda:InvokeFunctionUrl"], "functions": ["private"]}],
        },
        {
            "id": "AKIAONCEONLY",
            "secret_env": "EVENTWIRE_TEST_URL_SECRET",
            "allow": [{"actions": ["lambda:InvokeFunctionUrl"]}],
            "rate_limit": {"per_second": 0.01, "burst": 1},
        },
        {
            "id": "AKIAINVOKEONLY",
            "secret_env": "EVENTWIRE_TEST_INVOKE_SECRET",
            "allow": [{"actions": ["lambda:InvokeFunction"]}],
        },
    ]
}
SECRETS = {"EVENTWIRE_TEST_URL_SECRET": "url-secret", "EVENTWIRE_TEST_INVOKE_SECRET": "inv-secret"}


@dataclass
class Urls:
    base: str
    api: LambdaApi
    http: aiohttp.ClientSession

    def of(self, function: str, path: str = "/") -> str:
        return f"{self.base}/fn/{function}{path}"


@pytest.fixture
async def urls(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Urls]:
    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)
    async with (
        store_for("sqlite", tmp_path) as where,
        running_service(
            where,
            FUNCTIONS,
            config={"api": KEYS, "limits": {"sync_payload": "64KB"}},
            api_listen="127.0.0.1:0",
        ) as service,
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as http,
    ):
        [api] = [p for p in service.pollers if isinstance(p, LambdaApi)]
        yield Urls(api.url, api, http)


async def test_a_get_reaches_the_handler_as_the_2_0_event(urls: Urls) -> None:
    headers = [
        ("X-Multi", "one"),
        ("X-Multi", "two"),
        ("Cookie", "a=1; b=2"),
        ("User-Agent", "t/1"),
    ]
    async with urls.http.get(
        urls.of("echo", "/orders/7") + "?expand=items&tag=x&tag=y", headers=headers
    ) as response:
        assert response.status == 200
        assert response.headers["content-type"] == "application/json"
        event = await response.json()
        invocation_id = response.headers["X-Eventwire-Invocation-Id"]
    assert event["version"] == "2.0" and event["routeKey"] == "$default"
    assert event["rawPath"] == "/orders/7"
    assert event["rawQueryString"] == "expand=items&tag=x&tag=y"
    assert event["queryStringParameters"] == {"expand": "items", "tag": "x,y"}
    assert event["cookies"] == ["a=1", "b=2"]
    assert event["headers"]["x-multi"] == "one,two" and "cookie" not in event["headers"]
    assert event["headers"]["x-forwarded-for"] == "127.0.0.1"
    assert event["headers"]["x-forwarded-proto"] == "http"
    assert event["headers"]["x-forwarded-port"] == urls.base.rsplit(":", 1)[1]
    context = event["requestContext"]
    assert context["http"] == {
        "method": "GET",
        "path": "/orders/7",
        "protocol": "HTTP/1.1",
        "sourceIp": "127.0.0.1",
        "userAgent": "t/1",
    }
    assert context["accountId"] == "anonymous" and "authorizer" not in context
    assert context["requestId"] == invocation_id and context["stage"] == "$default"
    assert "body" not in event and event["isBase64Encoded"] is False
    # The same queue path as the Invoke API: a synchronous invocation in the history.
    invocation, attempts = await get_invocation(urls.api.engine, invocation_id)
    assert (invocation.function, invocation.sync, len(attempts)) == ("echo", True, 1)


async def test_a_post_carries_its_body_as_text_or_base64(urls: Urls) -> None:
    async with urls.http.post(urls.of("echo"), json={"sku": "A-1"}) as response:
        event = await response.json()
    assert json.loads(event["body"]) == {"sku": "A-1"} and event["isBase64Encoded"] is False
    assert event["rawPath"] == "/" and "queryStringParameters" not in event
    binary = bytes(range(256))
    headers = {"Content-Type": "application/octet-stream"}
    async with urls.http.put(urls.of("echo", "/blob"), data=binary, headers=headers) as response:
        event = await response.json()
    assert event["isBase64Encoded"] is True
    assert base64.b64decode(event["body"]) == binary
    assert event["requestContext"]["http"]["method"] == "PUT"


async def test_status_headers_cookies_and_body_are_mapped_back(urls: Urls) -> None:
    async with urls.http.delete(urls.of("custom", "/things/3")) as response:
        assert response.status == 201
        assert response.headers["Content-Type"] == "text/plain"
        assert response.headers["X-Custom"] == "yes"
        assert response.headers.getall("Set-Cookie") == [
            "session=abc; Path=/; HttpOnly",
            "theme=dark",
        ]
        assert await response.text() == "DELETE /things/3"
    async with urls.http.get(urls.of("image")) as response:
        assert response.headers["content-type"] == "image/png"
        assert await response.read() == PNG


async def test_any_other_json_is_a_200_with_the_json_as_body(urls: Urls) -> None:
    async with urls.http.get(urls.of("greeting")) as response:
        assert response.status == 200
        assert response.headers["content-type"] == "application/json"
        assert await response.read() == b'"Hello, world!"'


async def test_a_function_error_or_a_malformed_result_is_a_502(urls: Urls) -> None:
    for function in ("boom", "malformed"):
        async with urls.http.get(urls.of(function)) as response:
            assert response.status == 502, function
            assert await response.json() == {"Message": "Internal Server Error"}
            invocation_id = response.headers["x-amzn-RequestId"]
        finished = await wait_finished(urls.api.engine, invocation_id, 1)
        assert finished is not None
        expected = State.FAILED if function == "boom" else State.SUCCEEDED
        assert finished.state is expected


async def test_unknown_functions_and_functions_without_a_url_are_404(urls: Urls) -> None:
    for function in ("nobody", "internal"):
        async with urls.http.get(urls.of(function, "/x")) as response:
            assert response.status == 404
            assert response.headers["x-amzn-ErrorType"] == "ResourceNotFoundException"
            assert function in (await response.json())["Message"]


async def test_a_body_over_the_limit_is_413(urls: Urls) -> None:
    headers = {"Content-Type": "text/plain"}
    async with urls.http.post(urls.of("echo"), data=b"x" * 70_000, headers=headers) as response:
        assert response.status == 413
        assert "Message" in await response.json()


async def test_a_preflight_is_answered_from_the_cors_config(urls: Urls) -> None:
    asked = {
        "Origin": "https://shop.example",
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "content-type",
    }
    async with urls.http.options(urls.of("echo", "/orders"), headers=asked) as response:
        assert response.status == 200
        assert response.headers["Access-Control-Allow-Origin"] == "https://shop.example"
        assert response.headers["Access-Control-Allow-Methods"] == "GET, POST"
        assert response.headers["Access-Control-Allow-Headers"] == "content-type, x-token"
        assert response.headers["Access-Control-Max-Age"] == "300"
        assert response.headers["Access-Control-Allow-Credentials"] == "true"
        assert response.headers["Vary"] == "Origin"
        assert "X-Eventwire-Invocation-Id" not in response.headers  # nothing was invoked
    refused = {**asked, "Origin": "https://evil.example"}
    async with urls.http.options(urls.of("echo"), headers=refused) as response:
        assert "Access-Control-Allow-Origin" not in response.headers


async def test_answers_to_an_allowed_origin_carry_cors_headers(urls: Urls) -> None:
    origin = {"Origin": "https://shop.example"}
    async with urls.http.get(urls.of("echo"), headers=origin) as response:
        assert response.status == 200
        assert response.headers["Access-Control-Allow-Origin"] == "https://shop.example"
        assert response.headers["Access-Control-Expose-Headers"] == "x-custom"
    async with urls.http.get(urls.of("echo"), headers={"Origin": "https://evil.example"}) as r:
        assert r.status == 200 and "Access-Control-Allow-Origin" not in r.headers


def signed(method: str, url: str, key_id: str, secret: str, body: bytes = b"") -> dict[str, str]:
    """The headers botocore signs ``method url`` with, as a SigV4 client of a function URL."""
    request = AWSRequest(method=method, url=url, data=body)
    SigV4Auth(Credentials(key_id, secret), "lambda", "us-east-1").add_auth(request)
    return dict(request.headers.items())


async def test_an_aws_iam_url_wants_a_signature_by_an_allowed_key(urls: Urls) -> None:
    url = urls.of("private", "/report") + "?month=3"
    async with urls.http.get(url) as response:
        assert response.status == 403
        assert response.headers["x-amzn-ErrorType"] == "MissingAuthenticationTokenException"
    body = b'{"q": 1}'
    headers = signed("POST", url, "AKIAURLCALLER", "url-secret", body)
    headers["Content-Type"] = "application/json"  # not signed: SigV4 names what it signs
    async with urls.http.post(url, data=body, headers=headers) as response:
        assert response.status == 200
        event = await response.json()
    assert event["body"] == '{"q": 1}' and event["queryStringParameters"] == {"month": "3"}
    context = event["requestContext"]
    assert context["authorizer"]["iam"]["accessKey"] == "AKIAURLCALLER"
    assert context["accountId"] == "000000000000"
    for key_id, secret, code in [
        ("AKIAINVOKEONLY", "inv-secret", "AccessDeniedException"),
        ("AKIAURLCALLER", "guessed", "InvalidSignatureException"),
    ]:
        async with urls.http.get(url, headers=signed("GET", url, key_id, secret)) as response:
            assert response.status == 403
            assert response.headers["x-amzn-ErrorType"] == code
    # The Invoke API keeps its own signature check, and NONE URLs stay public with keys.
    async with urls.http.get(f"{urls.base}/2015-03-31/functions") as response:
        assert response.status == 403


async def test_a_powertools_app_runs_unchanged(urls: Urls) -> None:
    async with urls.http.get(urls.of("shop", "/orders/42") + "?expand=lines") as response:
        assert response.status == 200
        assert await response.json() == {"id": "42", "expand": "lines"}
    async with urls.http.post(urls.of("shop", "/orders"), json={"sku": "B-2"}) as response:
        assert response.status == 201
        assert response.headers["Location"] == "/orders/1"
        assert await response.json() == {"created": "B-2"}
    async with urls.http.get(urls.of("shop", "/nowhere")) as response:
        assert response.status == 404


async def test_a_host_of_name_lambda_url_routes_to_that_function(urls: Urls) -> None:
    headers = {"Host": "greeting.lambda-url.local"}
    async with urls.http.get(f"{urls.base}/any/path", headers=headers) as response:
        assert response.status == 200
        assert await response.read() == b'"Hello, world!"'
    async with urls.http.get(f"{urls.base}/x?y=1", headers={"Host": "echo.lambda-url.local"}) as r:
        event = await r.json()
    assert (event["rawPath"], event["rawQueryString"]) == ("/x", "y=1")
    assert event["requestContext"]["domainName"] == "echo.lambda-url.local"
    assert event["requestContext"]["domainPrefix"] == "echo"


async def test_a_declared_length_over_the_limit_is_413_before_the_body(urls: Urls) -> None:
    reader, writer = await asyncio.open_connection(*urls.base.removeprefix("http://").split(":"))
    writer.write(b"POST /fn/echo/ HTTP/1.1\r\nHost: x\r\nContent-Length: 9999999\r\n\r\nshort")
    await writer.drain()
    status = await asyncio.wait_for(reader.readline(), 10)
    writer.close()
    await writer.wait_closed()
    assert status.startswith(b"HTTP/1.1 413")


async def test_throttles_are_429_with_retry_after(urls: Urls) -> None:
    # A function at its reserved concurrency (0: none may run), as the Invoke API answers.
    async with urls.http.get(urls.of("stopped")) as response:
        assert response.status == 429
        assert response.headers["x-amzn-ErrorType"] == "TooManyRequestsException"
        assert response.headers["Retry-After"] == "1"
    # A key past its rate limit.
    url = urls.of("private")
    async with urls.http.get(url, headers=signed("GET", url, "AKIAONCEONLY", "url-secret")) as r:
        assert r.status == 200
    async with urls.http.get(url, headers=signed("GET", url, "AKIAONCEONLY", "url-secret")) as r:
        assert r.status == 429 and int(r.headers["Retry-After"]) >= 1
