"""AWS SDK calls reach functions through the Lambda API (boto3, unchanged, at an endpoint URL)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from botocore.exceptions import ClientError
from sqlalchemy import func, select

from broker.api.lambda_api import LambdaApi
from broker.functions.invoking import wait_finished
from broker.models import State
from broker.service import Service
from broker.store.history import get_invocation
from broker.store.schema import invocations
from tests.support.lambda_client import lambda_client
from tests.support.service import running_service
from tests.support.stores import store_for
from tests.support.waiting import eventually

FUNCTIONS = {
    "echo": {"handler": "tests.handlers:echo", "timeout": "2.5s", "reserved_concurrency": 3},
    "boom": {"handler": "tests.handlers:boom"},
    "says": {"handler": "tests.handlers:says"},
}
LIMITS = {"limits": {"async_payload": "1KB", "sync_payload": "4KB"}}
LONG = json.dumps("x" * 8000).encode()


class Lambda:
    """A boto3 Lambda client of the service's endpoint, called off the event loop."""

    def __init__(self, service: Service) -> None:
        [api] = [p for p in service.pollers if isinstance(p, LambdaApi)]
        self.url = api.url
        self.engine = api.engine
        self.client = lambda_client(api.url)

    async def invoke(self, **kwargs: Any) -> dict[str, Any]:
        answer: dict[str, Any] = await asyncio.to_thread(self.client.invoke, **kwargs)
        return answer

    async def fails(self, **kwargs: Any) -> ClientError:
        with pytest.raises(ClientError) as caught:
            await self.invoke(**kwargs)
        return caught.value

    async def invocations(self) -> int:
        """How many invocations the store holds."""
        async with self.engine.connect() as conn:
            count = select(func.count()).select_from(invocations)
            return int((await conn.execute(count)).scalar_one())


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[Lambda]:
    async with (
        store_for("sqlite", tmp_path) as where,
        running_service(where, FUNCTIONS, config=LIMITS, api_listen="127.0.0.1:0") as service,
    ):
        yield Lambda(service)


@pytest.mark.parametrize("backend", ["sqlite", "redis"])
async def test_a_synchronous_invoke_answers_the_functions_result(
    backend: str, tmp_path: Path
) -> None:
    async with (
        store_for(backend, tmp_path) as where,
        running_service(where, FUNCTIONS, api_listen="127.0.0.1:0") as service,
    ):
        client = Lambda(service)
        answer = await client.invoke(FunctionName="echo", Payload=b'{"n": 7}')
        assert answer["StatusCode"] == 200
        assert answer["ExecutedVersion"] == "$LATEST"
        assert "FunctionError" not in answer
        assert json.loads(answer["Payload"].read()) == {"n": 7}
        request_id = answer["ResponseMetadata"]["RequestId"]
        row, _attempts = await get_invocation(client.engine, request_id)
        assert (row.origin, row.state, row.sync) == ("api", "succeeded", True)


async def test_a_function_error_comes_back_as_lambdas_error_document(api: Lambda) -> None:
    answer = await api.invoke(FunctionName="boom", Payload=b"{}")
    assert answer["StatusCode"] == 200
    assert answer["FunctionError"] == "Unhandled"
    error = json.loads(answer["Payload"].read())
    assert (error["errorType"], error["errorMessage"]) == ("ValueError", "boom")
    assert any("raise ValueError" in line for line in error["stackTrace"])


async def test_an_event_invoke_is_queued_and_then_runs(api: Lambda) -> None:
    answer = await api.invoke(FunctionName="echo", InvocationType="Event", Payload=b'{"a": 1}')
    assert answer["StatusCode"] == 202
    invocation_id = answer["ResponseMetadata"]["RequestId"]
    finished = await wait_finished(api.engine, invocation_id, 20)
    assert finished is not None and finished.state is State.SUCCEEDED
    assert finished.result is not None and json.loads(finished.result) == {"a": 1}
    row, _attempts = await get_invocation(api.engine, invocation_id)
    assert row.sync is False  # asynchronous: retries, destinations and the DLQ apply


async def test_a_dry_run_checks_and_enqueues_nothing(api: Lambda) -> None:
    answer = await api.invoke(FunctionName="echo", InvocationType="DryRun", Payload=b"{}")
    assert answer["StatusCode"] == 204
    assert await api.invocations() == 0
    error = await api.fails(FunctionName="nope", InvocationType="DryRun")
    assert error.response["Error"]["Code"] == "ResourceNotFoundException"


@pytest.mark.parametrize(
    "name",
    ["echo", "echo:$LATEST", "arn:aws:lambda:local:000000000000:function:echo"],
)
async def test_a_function_is_named_by_name_or_arn(api: Lambda, name: str) -> None:
    answer = await api.invoke(FunctionName=name, Payload=b'"x"')
    assert json.loads(answer["Payload"].read()) == "x"


@pytest.mark.parametrize(
    ("call", "code", "says"),
    [
        ({"FunctionName": "nope"}, "ResourceNotFoundException", "function not found: nope"),
        ({"FunctionName": "echo", "Qualifier": "3"}, "ResourceNotFoundException", "echo:3"),
        ({"FunctionName": "echo:prod"}, "ResourceNotFoundException", "echo:prod"),
        ({"FunctionName": "echo", "Payload": b"{nope"}, "InvalidRequestContentException", "JSON"),
        (
            {
                "FunctionName": "echo",
                "InvocationType": "Event",
                "Payload": b'"' + b"x" * 2000 + b'"',
            },
            "RequestTooLargeException",
            "asynchronous",
        ),
        (
            {"FunctionName": "echo", "Payload": b'"' + b"x" * 8000 + b'"'},
            "RequestTooLargeException",
            "synchronous",
        ),
    ],
)
async def test_a_bad_call_is_lambdas_error_and_enqueues_nothing(
    api: Lambda, call: dict[str, Any], code: str, says: str
) -> None:
    error = await api.fails(**call)
    assert error.response["Error"]["Code"] == code
    assert says in error.response["Error"]["Message"]
    assert await api.invocations() == 0


async def post(
    api: Lambda, function: str, body: bytes, headers: dict[str, str]
) -> tuple[int, dict[str, str], bytes]:
    url = f"{api.url}/2015-03-31/functions/{function}/invocations"
    async with (
        aiohttp.ClientSession() as session,
        session.post(url, data=body, headers=headers) as r,
    ):
        return r.status, dict(r.headers), await r.read()


async def test_an_idempotency_key_makes_a_repeated_call_the_same_invocation(api: Lambda) -> None:
    headers = {"X-Amz-Invocation-Type": "Event", "X-Eventwire-Idempotency-Key": "order-17"}
    first = await post(api, "echo", b'{"order": 17}', headers)
    again = await post(api, "echo", b'{"order": 17}', headers)
    assert first[0] == again[0] == 202
    assert first[1]["X-Eventwire-Invocation-Id"] == again[1]["X-Eventwire-Invocation-Id"]
    assert await api.invocations() == 1


async def test_an_unknown_invocation_type_is_refused(api: Lambda) -> None:
    status, headers, body = await post(api, "echo", b"{}", {"X-Amz-Invocation-Type": "Later"})
    assert status == 400
    assert headers["x-amzn-ErrorType"] == "InvalidParameterValueException"
    assert "RequestResponse, Event, DryRun" in json.loads(body)["message"]
    assert await api.invocations() == 0


async def test_functions_are_listed_and_described_as_lambda_does(api: Lambda) -> None:
    listed = await asyncio.to_thread(api.client.list_functions)
    assert [f["FunctionName"] for f in listed["Functions"]] == ["boom", "echo", "says"]
    described = await asyncio.to_thread(api.client.get_function, FunctionName="echo")
    configuration = described["Configuration"]
    assert configuration["FunctionArn"] == "arn:aws:lambda:local:000000000000:function:echo"
    assert (configuration["Handler"], configuration["Timeout"]) == ("tests.handlers:echo", 3)
    assert configuration["Runtime"].startswith("python3.")
    assert described["Concurrency"] == {"ReservedConcurrentExecutions": 3}
    assert configuration in listed["Functions"]
    with pytest.raises(ClientError) as caught:
        await asyncio.to_thread(api.client.get_function, FunctionName="nope")
    assert caught.value.response["Error"]["Code"] == "ResourceNotFoundException"


async def test_json_nested_too_deeply_is_the_callers_mistake(tmp_path: Path) -> None:
    deep = b"[" * 200_000 + b"]" * 200_000  # past any Python's decoder (3.13's goes deeper)
    limits = {"limits": {"sync_payload": "1MB"}}
    async with (
        store_for("sqlite", tmp_path) as where,
        running_service(where, FUNCTIONS, config=limits, api_listen="127.0.0.1:0") as service,
    ):
        api = Lambda(service)
        error = await api.fails(FunctionName="echo", Payload=deep)
        assert error.response["ResponseMetadata"]["HTTPStatusCode"] == 400
        assert error.response["Error"]["Code"] == "InvalidRequestContentException"
        assert "nested too deeply" in error.response["Error"]["Message"]
        assert await api.invocations() == 0


async def test_a_body_declared_too_large_is_refused_before_it_is_sent(api: Lambda) -> None:
    host, port = api.url.removeprefix("http://").rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(
            b"POST /2015-03-31/functions/echo/invocations HTTP/1.1\r\n"
            b"Host: eventwire\r\nContent-Length: 10000000\r\n\r\n{}"
        )
        await writer.drain()
        async with asyncio.timeout(10):  # not the rest of the 10 MB it never sends
            status_line = await reader.readline()
            rest = await reader.read(4096)
    finally:
        writer.close()
    assert status_line.split()[1] == b"413", status_line
    assert b"RequestTooLargeException" in rest


async def test_an_operation_eventwire_does_not_serve_is_named_in_lambdas_error(
    api: Lambda,
) -> None:
    with pytest.raises(ClientError) as caught:
        await asyncio.to_thread(api.client.get_function_configuration, FunctionName="echo")
    error = caught.value.response
    assert error["ResponseMetadata"]["HTTPStatusCode"] == 404
    assert error["Error"]["Code"] == "UnknownOperationException"
    assert "GetFunctionConfiguration" in error["Error"]["Message"]
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"{api.url}/nowhere") as response,
    ):
        assert response.status == 404
        assert response.headers["x-amzn-ErrorType"] == "UnknownOperationException"
        assert "no such operation" in (await response.json())["message"]


async def test_a_function_at_its_reserved_concurrency_throttles_sync_calls_and_queues_events(
    tmp_path: Path,
) -> None:
    from tests import handlers

    handlers.GATE.clear()
    functions = {"gated": {"handler": "tests.handlers:gated", "reserved_concurrency": 1}}
    async with (
        store_for("sqlite", tmp_path) as where,
        running_service(where, functions, api_listen="127.0.0.1:0") as service,
    ):
        api = Lambda(service)
        queue = service.dispatcher.queue  # type: ignore[union-attr]
        first = asyncio.create_task(api.invoke(FunctionName="gated", Payload=b"{}"))
        try:
            await eventually(
                lambda: queue.running("gated", datetime.now(UTC)), 10, "the first call to run"
            )
            error = await api.fails(FunctionName="gated", Payload=b"{}")
            meta = error.response["ResponseMetadata"]
            assert meta["HTTPStatusCode"] == 429
            assert error.response["Error"]["Code"] == "TooManyRequestsException"
            assert meta["HTTPHeaders"]["retry-after"] == "1"
            queued = await api.invoke(FunctionName="gated", InvocationType="Event", Payload=b"{}")
            assert queued["StatusCode"] == 202
        finally:
            handlers.GATE.set()
        assert json.loads((await first)["Payload"].read()) == "through"
        assert await api.invocations() == 2  # the throttled call was never enqueued
