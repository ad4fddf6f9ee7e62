"""The in-process python invoker, driven through its ``Invoker`` interface."""

from __future__ import annotations

import asyncio
import json
import re
import sys
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

import pytest

import invokers.context
from broker.config.models import FunctionConfig
from broker.functions.invoker import InvokeRequest, InvokerInitError
from broker.models import FunctionError, Outcome, Success, SystemFault
from invokers.context import LambdaContext
from invokers.python import PythonInvoker
from tests import handlers

ARN = "arn:aws:lambda:local:000000000000:function:fn"


class MakeInvoker(Protocol):
    async def __call__(
        self, handler: str = ..., *, start: bool = ..., **options: Any
    ) -> PythonInvoker: ...


@pytest.fixture
async def make() -> AsyncIterator[MakeInvoker]:
    """Builds started invokers for function ``fn``; closes them and frees blocked handlers."""
    created: list[PythonInvoker] = []
    handlers.RELEASE.clear()
    handlers.STARTED.clear()

    async def make(
        handler: str = "tests.handlers:echo", *, start: bool = True, **options: Any
    ) -> PythonInvoker:
        options.setdefault("timeout", "1s")
        invoker = PythonInvoker("fn", FunctionConfig(handler=handler, **options))
        created.append(invoker)
        if start:
            await invoker.start()
        return invoker

    yield make
    handlers.RELEASE.set()
    for invoker in created:
        await invoker.close()


def request(
    payload: bytes | Any = None,
    *,
    timeout_s: float = 1.0,
    request_id: str | None = None,
) -> InvokeRequest:
    """An attempt of an invocation of ``fn``; ``payload`` is JSON-encoded unless bytes."""
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    invocation_id = uuid.uuid4().hex
    return InvokeRequest(
        request_id=request_id or invocation_id,
        invocation_id=invocation_id,
        function="fn",
        function_arn=ARN,
        payload=body,
        deadline=datetime.now(UTC) + timedelta(seconds=timeout_s),
        attempt=1,
    )


def decoded(outcome: Outcome) -> Any:
    assert isinstance(outcome, Success), outcome
    return json.loads(outcome.payload)


def failed(outcome: Outcome, error_type: str) -> FunctionError:
    assert isinstance(outcome, FunctionError), outcome
    assert outcome.error_type == error_type, outcome
    return outcome


async def until(condition: Callable[[], bool], within_s: float = 2.0) -> None:
    deadline = time.monotonic() + within_s
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.005)


# ------------------------------------------------------------ calling


@pytest.mark.parametrize("handler", ["tests.handlers:echo", "tests.handlers:aecho"])
async def test_echo_returns_the_event_as_json(make: MakeInvoker, handler: str) -> None:
    invoker = await make(handler)
    event = {"name": "café", "items": [1, 2.5, None, True], "nested": {"k": "v"}}

    assert decoded(await invoker.invoke(request(event))) == event


async def test_lambda_style_dotted_handler_name(make: MakeInvoker) -> None:
    invoker = await make("tests.handlers.echo")

    assert decoded(await invoker.invoke(request({"a": 1}))) == {"a": 1}


async def test_handler_is_loaded_on_first_invoke_without_start(make: MakeInvoker) -> None:
    invoker = await make(start=False)

    assert decoded(await invoker.invoke(request([1, 2]))) == [1, 2]


async def test_none_becomes_json_null(make: MakeInvoker) -> None:
    invoker = await make("tests.handlers:noop")

    assert await invoker.invoke(request({})) == Success(b"null")


async def test_decimals_are_encoded_as_numbers(make: MakeInvoker) -> None:
    invoker = await make("tests.handlers:decimals")

    assert decoded(await invoker.invoke(request({}))) == {"count": 3, "price": 1.5}


async def test_sync_function_returning_an_awaitable_is_awaited(make: MakeInvoker) -> None:
    invoker = await make("tests.handlers:deferred")

    assert decoded(await invoker.invoke(request({"x": 1}))) == {"x": 1}


async def test_sync_handlers_run_in_the_invokers_threads(make: MakeInvoker) -> None:
    invoker = await make("tests.handlers:thread_name", reserved_concurrency=2)

    outcomes = await asyncio.gather(*(invoker.invoke(request({})) for _ in range(8)))

    names = {decoded(outcome) for outcome in outcomes}
    assert all(name.startswith("eventwire-fn") for name in names), names
    assert len(names) <= 2


async def test_async_handlers_run_on_the_event_loop(make: MakeInvoker) -> None:
    invoker = await make("tests.handlers:athread_name")

    assert decoded(await invoker.invoke(request({}))) == threading.current_thread().name


# ------------------------------------------------------------ failures


@pytest.mark.parametrize(
    ("handler", "function"),
    [("tests.handlers:boom", "boom"), ("tests.handlers:aboom", "aboom")],
)
async def test_exception_becomes_function_error_with_handler_trace(
    make: MakeInvoker, handler: str, function: str
) -> None:
    invoker = await make(handler)

    error = failed(await invoker.invoke(request({})), "ValueError")

    assert error.message == "boom"
    assert error.trace, "expected the handler's stack trace"
    assert f"in {function}" in error.trace[0]
    assert "tests/handlers.py" in error.trace[0].replace("\\", "/")
    assert 'raise ValueError("boom")' in error.trace[-1]
    assert not any("invokers/python.py" in line.replace("\\", "/") for line in error.trace)


async def test_sys_exit_in_a_handler_is_an_exit_error(make: MakeInvoker) -> None:
    invoker = await make("tests.handlers:exits")

    error = failed(await invoker.invoke(request({})), "Runtime.ExitError")

    assert error.message == "Runtime exited with error: exit status 3"


@pytest.mark.parametrize("handler", ["tests.handlers:echo", "tests.handlers:aecho"])
async def test_payload_that_is_not_json_is_an_unmarshal_error(
    make: MakeInvoker, handler: str
) -> None:
    invoker = await make(handler)

    error = failed(await invoker.invoke(request(b"{not json")), "Runtime.UnmarshalError")

    assert error.message.startswith("Unable to unmarshal input: ")


@pytest.mark.parametrize(
    "payload",
    [
        b'{"a": [1, 2.5, -0.0, "x\\u00e9", null, true], "a": 3}',
        b"[NaN, Infinity, -Infinity, 1e400, -1e400]",
        b"[18446744073709551615, 18446744073709551616, -9223372036854775809]",
        b"123456789012345678901234567890",
        b'["12345678901234567890", 0.1000000000000000055511151231257827]',
        b'"\\ud800"',
        b'"\xed\xa0\x80"',
        b"\xef\xbb\xbf[1]",
        '{"a": "é"}'.encode("utf-16"),
        b" [5e-324, 2.4703282292062328e-324] ",
    ],
)
async def test_events_decode_as_json_loads_decodes_them(make: MakeInvoker, payload: bytes) -> None:
    invoker = await make("tests.handlers:describe")
    assert decoded(await invoker.invoke(request(payload))) == repr(json.loads(payload))


@pytest.mark.parametrize(
    "payload", [b"[1,]", b'{"a": 1} x', b"[" * 200_000 + b"]" * 200_000, b"\xff"]
)
async def test_what_json_loads_refuses_is_an_unmarshal_error(
    make: MakeInvoker, payload: bytes
) -> None:
    with pytest.raises((ValueError, RecursionError)):  # no Python takes 200,000 levels
        json.loads(payload)
    invoker = await make("tests.handlers:describe")
    error = failed(await invoker.invoke(request(payload)), "Runtime.UnmarshalError")
    assert error.message.startswith("Unable to unmarshal input: ")


async def test_nesting_is_as_deep_as_json_loads_takes(make: MakeInvoker) -> None:
    """How deep ``json.loads`` goes is the interpreter's: Python 3.13 takes 5,000 levels of
    arrays, 3.11 and 3.12 refuse them. An event decodes, or fails, as it does there."""
    payload = b"[" * 5000 + b"]" * 5000
    invoker = await make("tests.handlers:depth")
    outcome = await invoker.invoke(request(payload))
    try:
        json.loads(payload)
    except RecursionError:
        failed(outcome, "Runtime.UnmarshalError")
    else:
        assert decoded(outcome) == 5000


async def test_unserializable_result_is_a_marshal_error(make: MakeInvoker) -> None:
    invoker = await make("tests.handlers:unserializable")

    error = failed(await invoker.invoke(request({})), "Runtime.MarshalError")

    assert error.message == (
        "Unable to marshal response: Object of type object is not JSON serializable"
    )


# ------------------------------------------------------------ timeouts


@pytest.mark.parametrize(
    "handler", ["tests.handlers:slow_sync", "tests.handlers:slow_async", "tests.handlers:stubborn"]
)
async def test_timeout_answers_task_timed_out_at_the_deadline(
    make: MakeInvoker, handler: str
) -> None:
    invoker = await make(handler, timeout=0.2)

    started = time.monotonic()
    outcome = await invoker.invoke(request({}, timeout_s=0.2))
    elapsed_s = time.monotonic() - started

    assert outcome == FunctionError("Task.TimedOut", "Task timed out after 0.20 seconds")
    assert elapsed_s < 2.0, f"took {elapsed_s:.2f}s; the handler takes {handlers.SLOW_S}s"


async def test_deadline_already_passed_does_not_run_the_handler(make: MakeInvoker) -> None:
    invoker = await make("tests.handlers:slow_sync")

    outcome = await invoker.invoke(request({}, timeout_s=-1.0))

    failed(outcome, "Task.TimedOut")
    assert handlers.STARTED == []


async def test_a_timed_out_sync_handler_does_not_block_other_invocations(
    make: MakeInvoker,
) -> None:
    invoker = await make("tests.handlers:slow_sync", timeout=0.2)
    failed(await invoker.invoke(request({}, timeout_s=0.2)), "Task.TimedOut")

    handlers.RELEASE.set()  # the next call returns at once

    assert decoded(await invoker.invoke(request({}))) == "finished"


# ------------------------------------------------------------ cancellation and close


@pytest.mark.parametrize("handler", ["tests.handlers:slow_sync", "tests.handlers:slow_async"])
async def test_cancellation_propagates(make: MakeInvoker, handler: str) -> None:
    invoker = await make(handler, timeout="10s")
    task = asyncio.create_task(invoker.invoke(request({}, timeout_s=10, request_id="r-cancel")))
    await until(lambda: "r-cancel" in handlers.STARTED)

    task.cancel()

    with pytest.raises(asyncio.CancelledError):
        await task


async def test_invoke_after_close_is_a_system_fault(make: MakeInvoker) -> None:
    invoker = await make()
    await invoker.close()

    outcome = await invoker.invoke(request({}))

    assert isinstance(outcome, SystemFault)


# ------------------------------------------------------------ loading


async def test_missing_module_fails_start_then_each_invoke(make: MakeInvoker) -> None:
    invoker = await make("tests.no_such_module:handler", start=False)

    with pytest.raises(InvokerInitError) as raised:
        await invoker.start()

    assert str(raised.value).startswith(
        "Runtime.ImportModuleError: Unable to import module 'tests.no_such_module': "
    )
    error = failed(await invoker.invoke(request({})), "Runtime.ImportModuleError")
    assert error.message.startswith("Unable to import module 'tests.no_such_module': ")


@pytest.mark.parametrize("spec", ["nodots", "mod:", ":handler", "mod.", "a.b:c:d", ".mod.f"])
async def test_malformed_handler_name(make: MakeInvoker, spec: str) -> None:
    invoker = await make(spec, start=False)

    with pytest.raises(InvokerInitError, match=r"^Runtime\.MalformedHandlerName: Bad handler"):
        await invoker.start()
    failed(await invoker.invoke(request({})), "Runtime.MalformedHandlerName")


@pytest.fixture
def module_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[], str]]:
    """A directory on ``sys.path`` for modules a test writes; returns a fresh module name."""
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(sys, "dont_write_bytecode", True)
    names: list[str] = []

    def new_name() -> str:
        names.append(f"ew_handler_{uuid.uuid4().hex}")
        return names[-1]

    yield new_name
    for name in names:
        sys.modules.pop(name, None)


async def test_missing_module_is_picked_up_once_written(
    make: MakeInvoker, module_dir: Callable[[], str], tmp_path: Path
) -> None:
    name = module_dir()
    invoker = await make(f"{name}.handler", start=False)
    with pytest.raises(InvokerInitError, match=r"^Runtime\.ImportModuleError"):
        await invoker.start()

    (tmp_path / f"{name}.py").write_text("def handler(event, context):\n    return 'fixed'\n")

    assert decoded(await invoker.invoke(request({}))) == "fixed"


async def test_missing_handler_is_picked_up_once_the_module_is_fixed(
    make: MakeInvoker, module_dir: Callable[[], str], tmp_path: Path
) -> None:
    name = module_dir()
    source = tmp_path / f"{name}.py"
    source.write_text("def other(event, context):\n    return None\n")
    invoker = await make(f"{name}:handler", start=False)

    with pytest.raises(InvokerInitError) as raised:
        await invoker.start()
    assert str(raised.value) == (
        f"Runtime.HandlerNotFound: Handler 'handler' missing on module '{name}'"
    )
    failed(await invoker.invoke(request({})), "Runtime.HandlerNotFound")

    source.write_text("def handler(event, context):\n    return 'fixed at last'\n")

    assert decoded(await invoker.invoke(request({}))) == "fixed at last"


async def test_syntax_error_in_module(
    make: MakeInvoker, module_dir: Callable[[], str], tmp_path: Path
) -> None:
    name = module_dir()
    (tmp_path / f"{name}.py").write_text("def handler(event, context)\n    return 1\n")
    invoker = await make(f"{name}:handler", start=False)

    with pytest.raises(InvokerInitError, match=r"^Runtime\.UserCodeSyntaxError: Syntax error"):
        await invoker.start()


async def test_exception_while_importing_is_reported_by_its_type(
    make: MakeInvoker, module_dir: Callable[[], str], tmp_path: Path
) -> None:
    name = module_dir()
    (tmp_path / f"{name}.py").write_text("raise RuntimeError('no config')\n")
    invoker = await make(f"{name}:handler", start=False)

    with pytest.raises(InvokerInitError, match=r"^RuntimeError: no config$"):
        await invoker.start()
    error = failed(await invoker.invoke(request({})), "RuntimeError")
    assert any(f"{name}.py" in line for line in error.trace)


# ------------------------------------------------------------ context


async def test_context_fields(make: MakeInvoker) -> None:
    invoker = await make("tests.handlers:context_fields", memory="256MB")

    fields = decoded(await invoker.invoke(request({}, request_id="req-1")))

    assert fields["aws_request_id"] == "req-1"
    assert fields["function_name"] == "fn"
    assert fields["invoked_function_arn"] == ARN
    assert fields["memory_limit_in_mb"] == "256"
    assert 0 < fields["remaining_ms"] <= 1000


def test_context_from_request_has_lambdas_attributes() -> None:
    context = LambdaContext.from_request(request({}, request_id="req-2"), 512)

    assert context.aws_request_id == "req-2"
    assert context.function_name == "fn"
    assert context.function_version == "$LATEST"
    assert context.invoked_function_arn == ARN
    assert context.memory_limit_in_mb == "512"
    assert context.log_group_name == "/aws/lambda/fn"
    assert re.fullmatch(r"\d{4}/\d{2}/\d{2}/\[\$LATEST\][0-9a-f]{32}", context.log_stream_name)
    assert context.identity is None
    assert context.client_context is None
    assert 0 < context.get_remaining_time_in_millis() <= 1000
    with pytest.raises(AttributeError):
        context.extra = 1  # type: ignore[attr-defined]


def test_remaining_time_counts_down_to_zero(monkeypatch: pytest.MonkeyPatch) -> None:
    now = [100.0]
    monkeypatch.setattr(invokers.context, "monotonic", lambda: now[0])
    context = LambdaContext(
        aws_request_id="r",
        function_name="fn",
        invoked_function_arn=ARN,
        memory_limit_in_mb=128,
        remaining_s=1.0,
    )

    readings = []
    for t in (100.0, 100.25, 100.999, 101.0, 105.0):
        now[0] = t
        readings.append(context.get_remaining_time_in_millis())

    assert readings == [1000, 750, 1, 0, 0]


async def test_print_and_logging_of_a_handler_are_its_invocation_log(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    module = tmp_path / "chatter.py"
    module.write_text(
        "import logging\n"
        "def handler(event, context):\n"
        "    print('hello from', event['who'])\n"
        "    logging.getLogger('chatter').warning('careful, %s', event['who'])\n"
        "    return event['who']\n"
        "async def ahandler(event, context):\n"
        "    print('async', event['who'])\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    sync_invoker = PythonInvoker("f", FunctionConfig(handler="chatter:handler"))
    async_invoker = PythonInvoker("g", FunctionConfig(handler="chatter:ahandler"))
    await sync_invoker.start()
    await async_invoker.start()
    try:
        a, b, c = await asyncio.gather(
            sync_invoker.invoke(request(b'{"who": "a"}')),
            sync_invoker.invoke(request(b'{"who": "b"}')),
            async_invoker.invoke(request(b'{"who": "c"}')),
        )
    finally:
        await sync_invoker.close()
        await async_invoker.close()
    assert a.log == "hello from a\n[WARNING] chatter: careful, a"
    assert b.log == "hello from b\n[WARNING] chatter: careful, b"
    assert c.log == "async c"
