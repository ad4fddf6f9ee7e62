"""The in-process invoker: calls a Python handler inside the broker's own process.

The handler is named as ``package.module:function`` or, as in Lambda,
``package.module.function``; it is called as ``handler(event, context)`` with
the JSON-decoded payload and a :class:`~invokers.context.LambdaContext`, and
its return value is JSON-encoded as the response. Failures take Lambda's
shapes: an exception becomes its class name, message and stack trace;
``Runtime.ImportModuleError``, ``Runtime.HandlerNotFound``,
``Runtime.UnmarshalError``, ``Runtime.MarshalError`` and ``Task.TimedOut``
are reported under those names.

Coroutine functions (and sync functions that return an awaitable) are awaited
on the event loop. Other handlers run in a thread pool owned by the invoker,
``reserved_concurrency`` threads wide (64 when unset).

This is the fast backend, not an isolated one:

* A timed-out **sync** handler cannot be stopped: Python has no way to kill a
  thread. The invocation is answered with ``Task.TimedOut`` at its deadline
  and the thread is left to run to completion, holding one pool slot until it
  does. An **async** handler is cancelled at its deadline, unless it blocks
  the event loop (``time.sleep`` in a coroutine), which stalls the broker and
  cannot be timed out at all.
* Handlers share the broker's interpreter: its modules, ``os.environ``, and
  any global state. The function's ``environment`` is not applied (setting
  ``os.environ`` would leak into every other function).

Use the ``process`` invoker (a pool of Lambda Runtime API processes) when a
function needs real isolation or hard timeouts.

If the handler cannot be loaded, :meth:`PythonInvoker.start` raises
:class:`~broker.functions.invoker.InvokerInitError`; each later ``invoke`` then tries
the import once more (re-importing the module if it imported but lacked the
handler), so a fixed module is picked up without a restart, and otherwise
answers with the load error as a ``FunctionError``.
"""

from __future__ import annotations

import asyncio
import contextvars
import dataclasses
import importlib
import inspect
import json
import sys
import traceback
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final

import msgspec

from broker.functions.invoker import InvokeRequest, InvokerInitError
from broker.models import FunctionError, Outcome, Success, SystemFault
from invokers import capture
from invokers.context import LambdaContext, new_log_stream_name, seconds_until

if TYPE_CHECKING:
    from broker.config.models import FunctionConfig

Handler = Callable[[Any, LambdaContext], Any]

DEFAULT_MAX_WORKERS: Final = 64
"""Threads for sync handlers when the function has no ``reserved_concurrency``."""

_CLOSED: Final = SystemFault("Invoker.Closed", "the python invoker has been closed")

# Leading frames from these files are dropped from a handler's stack trace.
_INTERNAL_FILES: Final = frozenset({__file__, importlib.__file__})


class PythonInvoker:
    """Runs one function's handler in this process; see the module docstring."""

    def __init__(self, name: str, config: FunctionConfig) -> None:
        self.name = name
        self._spec = config.handler or ""
        self._memory_mb = config.memory_mb
        self._timed_out = FunctionError(
            "Task.TimedOut", f"Task timed out after {config.timeout_s:.2f} seconds"
        )
        self._log_stream_name = new_log_stream_name()
        self._executor = ThreadPoolExecutor(
            max_workers=config.reserved_concurrency or DEFAULT_MAX_WORKERS,
            thread_name_prefix=f"eventwire-{name}",
        )
        self._handler: Handler | None = None
        self._is_async = False
        self._load_error: FunctionError | None = None
        self._load_attempts = 0
        self._load_lock = asyncio.Lock()
        self._closed = False

    async def start(self) -> None:
        """Import the handler's module and find the handler in it.

        Raises :class:`InvokerInitError` with Lambda's error type and message,
        e.g. ``Runtime.ImportModuleError: Unable to import module 'app': ...``.
        """
        capture.install()
        loaded = await self._ensure_loaded()
        if isinstance(loaded, FunctionError):
            raise InvokerInitError(f"{loaded.error_type}: {loaded.message}")

    async def invoke(self, request: InvokeRequest) -> Outcome:
        """Run the handler once; what it prints or logs meanwhile is the outcome's ``log``."""
        buffer = capture.LogBuffer()
        token = capture.start(buffer)
        try:
            outcome = await self._invoke(request)
        finally:
            capture.stop(token)
        text = buffer.text()
        return dataclasses.replace(outcome, log=text) if text else outcome

    async def _invoke(self, request: InvokeRequest) -> Outcome:
        if self._closed:
            return _CLOSED
        handler = self._handler
        if handler is None:
            loaded = await self._ensure_loaded()
            if isinstance(loaded, FunctionError):
                return loaded
            if self._closed:  # closed while the handler was importing
                return _CLOSED
            handler = loaded
        remaining_s = seconds_until(request.deadline)
        if remaining_s <= 0:
            return self._timed_out
        context = LambdaContext(
            aws_request_id=request.request_id,
            function_name=request.function,
            invoked_function_arn=request.function_arn,
            memory_limit_in_mb=self._memory_mb,
            remaining_s=remaining_s,
            log_stream_name=self._log_stream_name,
        )
        loop = asyncio.get_running_loop()
        timeout = asyncio.timeout_at(loop.time() + remaining_s)
        try:
            async with timeout:
                if self._is_async:
                    outcome = await _call_async(handler, request.payload, context)
                else:
                    result = await loop.run_in_executor(
                        self._executor,
                        contextvars.copy_context().run,  # the thread logs to this invocation
                        _call_sync,
                        handler,
                        request.payload,
                        context,
                    )
                    outcome = (
                        await _settle(result.awaitable) if isinstance(result, _Pending) else result
                    )
        except TimeoutError:
            # Handler errors are caught inside the block: this is the deadline.
            return self._timed_out
        # A coroutine that swallowed its cancellation still ran out of time.
        return self._timed_out if timeout.expired() else outcome

    async def close(self) -> None:
        """Stop taking work; threads still running timed-out handlers are abandoned."""
        self._closed = True
        self._executor.shutdown(wait=False, cancel_futures=True)

    async def _ensure_loaded(self) -> Handler | FunctionError:
        """The handler, importing it if needed; at most one import runs at a time.

        Callers that waited while another call's import ran take its result
        instead of importing again.
        """
        seen = self._load_attempts
        async with self._load_lock:
            if self._handler is None and self._load_attempts == seen:
                await self._load()
        if self._handler is not None:
            return self._handler
        return self._load_error or FunctionError("Runtime.Unknown", "handler not loaded")

    async def _load(self) -> None:
        fresh = self._load_attempts > 0
        loop = asyncio.get_running_loop()
        try:
            handler = await loop.run_in_executor(self._executor, _load_handler, self._spec, fresh)
        except _LoadError as exc:
            self._load_error = exc.error
        else:
            self._is_async = _is_coroutine_function(handler)
            self._handler = handler
            self._load_error = None
        self._load_attempts += 1


# ------------------------------------------------------------ loading


class _LoadError(Exception):
    def __init__(self, error: FunctionError) -> None:
        super().__init__(f"{error.error_type}: {error.message}")
        self.error = error


def parse_handler(spec: str) -> tuple[str, str]:
    """``(module, function)`` from ``pkg.mod:function`` or Lambda's ``pkg.mod.function``.

    Lambda's ``src/app.handler`` (a path) is accepted as ``src.app``.
    """
    if ":" in spec:
        module, _, function = spec.partition(":")
    else:
        module, _, function = spec.rpartition(".")
    module = module.replace("/", ".")
    if not module or module.startswith(".") or not function.isidentifier():
        raise _LoadError(
            FunctionError(
                "Runtime.MalformedHandlerName",
                f"Bad handler '{spec}': expected 'package.module:function' "
                "or 'package.module.function'",
            )
        )
    return module, function


def _load_handler(spec: str, fresh: bool) -> Handler:
    """Import the module named by ``spec`` and return its handler (runs in a worker thread).

    ``fresh`` (a retry after a failure) drops the import system's caches of
    directory listings, and re-executes the module if it is already imported,
    so that a fixed file is read again.
    """
    module_name, function = parse_handler(spec)
    if fresh:
        importlib.invalidate_caches()
    try:
        module = sys.modules.get(module_name) if fresh else None
        if module is not None:
            module = importlib.reload(module)
        else:
            module = importlib.import_module(module_name)
    except ImportError as exc:
        message = f"Unable to import module '{module_name}': {exc}"
        raise _LoadError(FunctionError("Runtime.ImportModuleError", message)) from None
    except SyntaxError as exc:
        message = f"Syntax error in module '{module_name}': {exc}"
        where = f'  File "{exc.filename}" Line {exc.lineno}\n    {exc.text}'
        raise _LoadError(FunctionError("Runtime.UserCodeSyntaxError", message, (where,))) from None
    except BaseException as exc:  # the module's own code failed while importing
        raise _LoadError(_function_error(exc)) from None
    handler = getattr(module, function, None)
    if not callable(handler):
        message = f"Handler '{function}' missing on module '{module_name}'"
        raise _LoadError(FunctionError("Runtime.HandlerNotFound", message))
    loaded: Handler = handler
    return loaded


def _is_coroutine_function(handler: Handler) -> bool:
    """Whether calling ``handler`` gives a coroutine (a function, or an object's ``__call__``)."""
    return inspect.iscoroutinefunction(handler) or inspect.iscoroutinefunction(
        type(handler).__call__
    )


# ------------------------------------------------------------ calling


class _Pending:
    """A sync handler's awaitable result, to be awaited on the event loop."""

    __slots__ = ("awaitable",)

    def __init__(self, awaitable: Awaitable[Any]) -> None:
        self.awaitable = awaitable


def _call_sync(handler: Handler, payload: bytes, context: LambdaContext) -> Outcome | _Pending:
    """Decode, call and encode in a worker thread; never raises."""
    try:
        event = decode_event(payload)
    except (ValueError, RecursionError) as exc:
        return _unmarshal_error(exc)
    try:
        result = handler(event, context)
    except BaseException as exc:  # SystemExit included: it must not end a worker thread
        return _function_error(exc)
    if inspect.isawaitable(result):
        return _Pending(result)
    return _marshal(result)


async def _call_async(handler: Handler, payload: bytes, context: LambdaContext) -> Outcome:
    """Decode, await and encode on the event loop; cancellation propagates."""
    try:
        event = decode_event(payload)
    except (ValueError, RecursionError) as exc:
        return _unmarshal_error(exc)
    try:
        result = await handler(event, context)
    except (Exception, SystemExit) as exc:
        return _function_error(exc)
    return _marshal(result)


async def _settle(awaitable: Awaitable[Any]) -> Outcome:
    try:
        result = await awaitable
    except (Exception, SystemExit) as exc:
        return _function_error(exc)
    return _marshal(result)


# ------------------------------------------------------------ decoding

_DECODER: Final = msgspec.json.Decoder()


def decode_event(payload: bytes) -> Any:
    """The event in ``payload``, as ``json.loads`` gives it, in about half the time.

    msgspec decodes what it accepts as ``json.loads`` does (integers of any size
    and nesting up to the same recursion limit included); what it refuses
    (``NaN`` and ``Infinity``, numbers too large for a float, lone surrogates,
    bytes that are not UTF-8, a byte order mark …) ``json.loads`` may still
    accept, so such a payload is decoded by ``json.loads``, whose error, if
    any, is the one reported.
    """
    try:
        return _DECODER.decode(payload)
    except ValueError:  # msgspec's DecodeError, or UnicodeDecodeError
        return json.loads(payload)


# ------------------------------------------------------------ encoding


def _json_default(value: object) -> object:
    if isinstance(value, Decimal):  # DynamoDB's numbers, which Lambda's runtime encodes
        return int(value) if value == value.to_integral_value() else float(value)
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


_ENCODER: Final = json.JSONEncoder(ensure_ascii=False, default=_json_default)


_NULL: Final = Success(b"null")


def _marshal(result: Any) -> Outcome:
    if result is None:  # what most stream handlers return: no encoder needed
        return _NULL
    try:
        return Success(_ENCODER.encode(result).encode())
    except (TypeError, ValueError, RecursionError) as exc:
        return FunctionError("Runtime.MarshalError", f"Unable to marshal response: {exc}")


def _unmarshal_error(exc: Exception) -> FunctionError:
    return FunctionError("Runtime.UnmarshalError", f"Unable to unmarshal input: {exc}")


def _function_error(exc: BaseException) -> FunctionError:
    """Lambda's error for an unhandled exception: class name, message, stack trace."""
    trace = _user_trace(exc.__traceback__)
    if isinstance(exc, SystemExit):
        status = 0 if exc.code is None else exc.code
        message = f"Runtime exited with error: exit status {status}"
        return FunctionError("Runtime.ExitError", message, trace)
    return FunctionError(type(exc).__name__, str(exc), trace)


def _user_trace(tb: TracebackType | None) -> tuple[str, ...]:
    """The formatted frames of ``tb``, without the invoker's own leading frames."""
    frames = traceback.extract_tb(tb)
    start = 0
    while start < len(frames) and (
        frames[start].filename in _INTERNAL_FILES or frames[start].filename.startswith("<frozen")
    ):
        start += 1
    return tuple(traceback.format_list(frames[start:]))
