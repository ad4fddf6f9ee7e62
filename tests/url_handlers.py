"""Handlers behind function URLs, written as Lambda functions behind a function URL are:
each returns the response Lambda maps back to HTTP, or is a Powertools app."""

from __future__ import annotations

import base64
import json
from typing import Any

from aws_lambda_powertools.event_handler import LambdaFunctionUrlResolver, Response

from invokers.context import LambdaContext

PNG = b"\x89PNG\r\n\x1a\n\x00\xff"


def custom(event: Any, context: LambdaContext) -> dict[str, Any]:
    """A 201 with headers, two cookies and a body that says what came."""
    return {
        "statusCode": 201,
        "headers": {"Content-Type": "text/plain", "X-Custom": "yes"},
        "cookies": ["session=abc; Path=/; HttpOnly", "theme=dark"],
        "body": f"{event['requestContext']['http']['method']} {event['rawPath']}",
    }


def image(event: Any, context: LambdaContext) -> dict[str, Any]:
    """Bytes, base64-encoded as a function URL wants them."""
    return {
        "statusCode": 200,
        "headers": {"content-type": "image/png"},
        "body": base64.b64encode(PNG).decode(),
        "isBase64Encoded": True,
    }


def greeting(event: Any, context: LambdaContext) -> str:
    return "Hello, world!"


def malformed(event: Any, context: LambdaContext) -> dict[str, Any]:
    """A statusCode no HTTP response can have."""
    return {"statusCode": "teapot", "body": "?"}


app = LambdaFunctionUrlResolver()


@app.get("/orders/<order_id>")
def get_order(order_id: str) -> dict[str, Any]:
    return {"id": order_id, "expand": app.current_event.get_query_string_value("expand")}


@app.post("/orders")
def create_order() -> Response[str]:
    order = app.current_event.json_body
    return Response(
        status_code=201,
        content_type="application/json",
        body=json.dumps({"created": order["sku"]}),
        headers={"Location": "/orders/1"},
    )


def shop(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    """A Powertools app, unchanged from what runs behind a Lambda function URL."""
    return app.resolve(event, context)  # type: ignore[arg-type]
