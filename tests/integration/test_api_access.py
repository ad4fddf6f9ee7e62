"""The Lambda API with ``api.keys``: boto3 signs with a key and gets what its statements
allow, nothing else; wrong, unknown and missing signatures are AWS's errors."""

from __future__ import annotations

import asyncio
import json
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from botocore import UNSIGNED
from botocore.exceptions import ClientError

from broker.api.lambda_api import LambdaApi
from tests.support.lambda_client import lambda_client
from tests.support.service import running_service
from tests.support.stores import store_for

FUNCTIONS = {"a": {"handler": "tests.handlers:echo"}, "b": {"handler": "tests.handlers:echo"}}
KEYS: dict[str, Any] = {
    "keys": [
        {
            "id": "AKIAINVOKESA",
            "secret_env": "EVENTWIRE_TEST_SECRET_A",
            "allow": [{"actions": ["lambda:InvokeFunction"], "functions": ["a"]}],
        },
        {
            "id": "AKIAREADONLY",
            "secret_env": "EVENTWIRE_TEST_SECRET_R",
            "allow": [{"actions": ["lambda:Get*", "lambda:ListFunctions"]}],
        },
        {
            "id": "AKIATHROTTLED",
            "secret_env": "EVENTWIRE_TEST_SECRET_R",
            "allow": [{"actions": ["lambda:ListFunctions"]}],
            "rate_limit": {"per_second": 0.01, "burst": 2},
        },
    ]
}
SECRETS = {"EVENTWIRE_TEST_SECRET_A": "secret-of-a", "EVENTWIRE_TEST_SECRET_R": "secret-of-r"}


@pytest.fixture
async def api_url(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[str]:
    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)
    async with (
        store_for("sqlite", tmp_path) as where,
        running_service(
            where, FUNCTIONS, config={"api": KEYS}, api_listen="127.0.0.1:0"
        ) as service,
    ):
        [api] = [p for p in service.pollers if isinstance(p, LambdaApi)]
        yield api.url


async def call(client: Any, operation: str, **kwargs: Any) -> Any:
    return await asyncio.to_thread(getattr(client, operation), **kwargs)


async def error_of(client: Any, operation: str, **kwargs: Any) -> tuple[int, str, str]:
    with pytest.raises(ClientError) as caught:
        await call(client, operation, **kwargs)
    error = caught.value.response
    status = error["ResponseMetadata"]["HTTPStatusCode"]
    return status, error["Error"]["Code"], error["Error"]["Message"]


async def test_a_key_may_invoke_what_it_is_allowed_and_nothing_else(api_url: str) -> None:
    invoker = lambda_client(api_url, "AKIAINVOKESA", "secret-of-a")
    answer = await call(invoker, "invoke", FunctionName="a", Payload=b'{"n": 1}')
    assert json.loads(answer["Payload"].read()) == {"n": 1}
    status, code, message = await error_of(invoker, "invoke", FunctionName="b", Payload=b"{}")
    assert (status, code) == (403, "AccessDeniedException")
    assert "lambda:InvokeFunction" in message and "function:b" in message
    assert (await error_of(invoker, "get_function", FunctionName="a"))[1] == "AccessDeniedException"
    assert (await error_of(invoker, "list_functions"))[1] == "AccessDeniedException"


async def test_a_read_only_key_looks_and_cannot_invoke(api_url: str) -> None:
    reader = lambda_client(api_url, "AKIAREADONLY", "secret-of-r")
    listed = await call(reader, "list_functions")
    assert [f["FunctionName"] for f in listed["Functions"]] == ["a", "b"]
    assert (await call(reader, "get_function", FunctionName="b"))["Configuration"]["FunctionName"]
    status, code, _ = await error_of(reader, "invoke", FunctionName="a", Payload=b"{}")
    assert (status, code) == (403, "AccessDeniedException")


async def test_wrong_unknown_and_missing_signatures_are_refused(api_url: str) -> None:
    guessed = lambda_client(api_url, "AKIAINVOKESA", "guessed")
    status, code, _ = await error_of(guessed, "invoke", FunctionName="a", Payload=b"{}")
    assert (status, code) == (403, "InvalidSignatureException")
    stranger = lambda_client(api_url, "AKIASTRANGER", "whatever")
    assert (await error_of(stranger, "list_functions"))[1] == "UnrecognizedClientException"
    anonymous = lambda_client(api_url)
    anonymous.meta.events.register_first("choose-signer", lambda **_: UNSIGNED)
    code = (await error_of(anonymous, "invoke", FunctionName="a", Payload=b"{}"))[1]
    assert code == "MissingAuthenticationTokenException"
    # Prometheus scrapes /metrics unsigned.
    assert await asyncio.to_thread(status_of, f"{api_url}/metrics") == 200


def status_of(url: str) -> int:
    with urllib.request.urlopen(url, timeout=10) as response:
        status: int = response.status
        return status


async def test_a_key_over_its_rate_limit_is_told_to_slow_down(api_url: str) -> None:
    throttled = lambda_client(api_url, "AKIATHROTTLED", "secret-of-r")
    for _ in range(2):
        await call(throttled, "list_functions")
    with pytest.raises(ClientError) as caught:
        await call(throttled, "list_functions")
    error = caught.value.response
    assert error["ResponseMetadata"]["HTTPStatusCode"] == 429
    assert error["Error"]["Code"] == "TooManyRequestsException"
    assert int(error["ResponseMetadata"]["HTTPHeaders"]["retry-after"]) >= 1
    other = lambda_client(api_url, "AKIAREADONLY", "secret-of-r")  # its own bucket
    assert (await call(other, "list_functions"))["Functions"]
