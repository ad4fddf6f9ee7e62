"""Lambda's invocation record: what destinations receive after an asynchronous invocation.

The shape is AWS Lambda's, so code that consumes Lambda destination records
reads ours unchanged::

    {"version": "1.0", "timestamp": "...",
     "requestContext": {"requestId", "functionArn", "condition", "approximateInvokeCount"},
     "requestPayload": {...},
     "responseContext": {"statusCode", "executedVersion", "functionError"?},
     "responsePayload": {...}}
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from broker.models import Condition, FunctionError, Invocation, Outcome, Success, SystemFault


def _json_or_text(data: bytes) -> Any:
    try:
        return json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        return data.decode("utf-8", "replace")


def error_payload(error: FunctionError | SystemFault, request_id: str) -> dict[str, Any]:
    """The error document Lambda returns for a failed invocation."""
    body: dict[str, Any] = {"errorMessage": error.message, "errorType": error.error_type}
    if isinstance(error, FunctionError):
        body["requestId"] = request_id
        body["stackTrace"] = list(error.trace)
    return body


def invocation_record(
    invocation: Invocation,
    outcome: Outcome | None,
    condition: Condition,
    function_arn: str,
    now: datetime,
) -> bytes:
    """The record for ``invocation`` ending with ``condition`` after ``outcome``.

    ``outcome`` is None when the event expired before it ran.
    """
    response_context: dict[str, Any] = {"statusCode": 200, "executedVersion": "$LATEST"}
    response_payload: Any = None
    if isinstance(outcome, Success):
        response_payload = _json_or_text(outcome.payload)
    elif isinstance(outcome, FunctionError):
        response_context["functionError"] = "Unhandled"
        response_payload = error_payload(outcome, invocation.request_id)
    elif isinstance(outcome, SystemFault):
        response_context["statusCode"] = 500
        response_payload = error_payload(outcome, invocation.request_id)
    record = {
        "version": "1.0",
        "timestamp": now.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "requestContext": {
            "requestId": invocation.request_id,
            "functionArn": f"{function_arn}:$LATEST",
            "condition": condition.value,
            "approximateInvokeCount": invocation.attempts,
        },
        "requestPayload": _json_or_text(invocation.payload),
        "responseContext": response_context,
        "responsePayload": response_payload,
    }
    return json.dumps(record, separators=(",", ":")).encode()
