"""The packaged Python runtime: ``python -m invokers.bootstrap`` serves ``_HANDLER``.

It speaks the Lambda Runtime API at ``AWS_LAMBDA_RUNTIME_API`` with the
standard library only, so a Python function run by the process invoker needs
nothing installed beyond its own code. ``_HANDLER`` names the handler as
Lambda does (``package.module.function``) or as Eventwire's python invoker
does (``package.module:function``); it is called as ``handler(event,
context)`` with a context like Lambda's.

Errors take Lambda's shapes: an exception is reported with its class name,
message and stack trace; a handler that cannot be loaded is an init error
(``Runtime.ImportModuleError``, ``Runtime.HandlerNotFound`` …) and the
process exits; a ``MemoryError`` is reported as ``Runtime.OutOfMemory`` and
the process exits, since its state can no longer be trusted.
"""

from __future__ import annotations

import http.client
import importlib
import json
import os
import sys
import time
import traceback
from collections.abc import Callable
from decimal import Decimal
from typing import Any

from invokers.context import LambdaContext, new_log_stream_name

API = "/2018-06-01/runtime"
Handler = Callable[[Any, LambdaContext], Any]


class _InitError(Exception):
    def __init__(self, error_type: str, message: str, trace: list[str] | None = None) -> None:
        super().__init__(message)
        self.error_type = error_type
        self.trace = trace or []


class RuntimeClient:
    """A keep-alive HTTP connection to the Runtime API."""

    def __init__(self, address: str) -> None:
        host, _, port = address.rpartition(":")
        self._connection = http.client.HTTPConnection(host, int(port))

    def request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, http.client.HTTPMessage, bytes]:
        for attempt in (1, 2):
            try:
                self._connection.request(method, path, body=body, headers=headers or {})
                response = self._connection.getresponse()
                return response.status, response.headers, response.read()
            except (ConnectionError, http.client.HTTPException):
                self._connection.close()  # the server closed an idle connection: reconnect once
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def post_error(self, path: str, error_type: str, message: str, trace: list[str]) -> None:
        body = json.dumps({"errorMessage": message, "errorType": error_type, "stackTrace": trace})
        self.request(
            "POST",
            path,
            body.encode(),
            {"Content-Type": "application/json", "Lambda-Runtime-Function-Error-Type": error_type},
        )


def load_handler(spec: str) -> Handler:
    """The function named by ``spec``; raises :class:`_InitError` with Lambda's error type."""
    if ":" in spec:
        module_name, _, function = spec.partition(":")
    else:
        module_name, _, function = spec.rpartition(".")
    module_name = module_name.replace("/", ".")
    if not module_name or module_name.startswith(".") or not function.isidentifier():
        raise _InitError(
            "Runtime.MalformedHandlerName",
            f"Bad handler '{spec}': expected 'package.module.function'",
        )
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise _InitError(
            "Runtime.ImportModuleError", f"Unable to import module '{module_name}': {exc}"
        ) from None
    except SyntaxError as exc:
        raise _InitError(
            "Runtime.UserCodeSyntaxError", f"Syntax error in module '{module_name}': {exc}"
        ) from None
    except Exception as exc:
        raise _InitError(type(exc).__name__, str(exc), _trace(exc)) from None
    handler = getattr(module, function, None)
    if not callable(handler):
        raise _InitError(
            "Runtime.HandlerNotFound", f"Handler '{function}' missing on module '{module_name}'"
        )
    loaded: Handler = handler
    return loaded


def _trace(exc: BaseException) -> list[str]:
    frames = traceback.extract_tb(exc.__traceback__)[1:]  # without this module's own frame
    return traceback.format_list(frames)


def _json_default(value: object) -> object:
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def _flush() -> None:
    sys.stdout.flush()
    sys.stderr.flush()


def serve(client: RuntimeClient, handler: Handler) -> None:
    """Take invocations one at a time until the process is stopped."""
    memory_mb = int(os.environ.get("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128"))
    function_name = os.environ.get("AWS_LAMBDA_FUNCTION_NAME", "function")
    log_stream = os.environ.get("AWS_LAMBDA_LOG_STREAM_NAME") or new_log_stream_name()
    encoder = json.JSONEncoder(ensure_ascii=False, default=_json_default)
    while True:
        status, headers, body = client.request("GET", f"{API}/invocation/next")
        if status != 200:
            sys.exit(0)  # the worker is being stopped
        request_id = headers["Lambda-Runtime-Aws-Request-Id"]
        os.environ["_X_AMZN_TRACE_ID"] = headers.get("Lambda-Runtime-Trace-Id", "")
        context = LambdaContext(
            aws_request_id=request_id,
            function_name=function_name,
            invoked_function_arn=headers.get("Lambda-Runtime-Invoked-Function-Arn", ""),
            memory_limit_in_mb=memory_mb,
            remaining_s=int(headers.get("Lambda-Runtime-Deadline-Ms", "0")) / 1000 - time.time(),
            log_stream_name=log_stream,
        )
        invocation = f"{API}/invocation/{request_id}"
        try:
            event = json.loads(body)
        except ValueError as exc:
            _flush()
            client.post_error(
                f"{invocation}/error",
                "Runtime.UnmarshalError",
                f"Unable to unmarshal input: {exc}",
                [],
            )
            continue
        outcome = _call(handler, event, context, encoder)
        _flush()
        if isinstance(outcome, bytes):
            client.request(
                "POST", f"{invocation}/response", outcome, {"Content-Type": "application/json"}
            )
            continue
        client.post_error(f"{invocation}/error", *outcome)
        if outcome[0] == "Runtime.OutOfMemory":
            os._exit(1)


def _call(
    handler: Handler, event: Any, context: LambdaContext, encoder: json.JSONEncoder
) -> bytes | tuple[str, str, list[str]]:
    """The encoded response, or the error as ``(type, message, stack trace)``."""
    try:
        value = handler(event, context)
    except MemoryError:
        return "Runtime.OutOfMemory", "Runtime out of memory", []
    except Exception as exc:
        return type(exc).__name__, str(exc), _trace(exc)
    try:
        return encoder.encode(value).encode()
    except MemoryError:
        return "Runtime.OutOfMemory", "Runtime out of memory", []
    except (TypeError, ValueError, RecursionError) as exc:
        return "Runtime.MarshalError", f"Unable to marshal response: {exc}", []


def main() -> None:
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]
    sys.stderr.reconfigure(line_buffering=True)  # type: ignore[union-attr]
    task_root = os.environ.get("LAMBDA_TASK_ROOT")
    if task_root and task_root not in sys.path:
        sys.path.insert(0, task_root)
    client = RuntimeClient(os.environ["AWS_LAMBDA_RUNTIME_API"])
    try:
        handler = load_handler(os.environ.get("_HANDLER", ""))
    except _InitError as exc:
        print(f"[ERROR] {exc.error_type}: {exc}", file=sys.stderr)
        client.post_error(f"{API}/init/error", exc.error_type, str(exc), exc.trace)
        sys.exit(1)
    serve(client, handler)


if __name__ == "__main__":
    main()
