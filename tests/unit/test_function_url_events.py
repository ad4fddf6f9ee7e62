"""The function URL event (payload format 2.0) a request becomes, the HTTP response a
handler's result maps back to, CORS answers, and the ``function_url`` config."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime
from typing import Any

import pytest

from broker.api.cors import is_preflight, preflight, response_headers
from broker.api.function_urls import target
from broker.config.function_urls import Cors
from broker.errors import ConfigError
from broker.events.function_url import (
    BadResponse,
    Caller,
    UrlRequest,
    http_response,
    is_text,
    url_event,
    url_id,
)
from broker.loading import parse_config

NOW = datetime(2026, 3, 12, 19, 3, 58, 390000, tzinfo=UTC)


def event_of(request: UrlRequest, caller: Caller | None = None) -> dict[str, Any]:
    return url_event(
        request,
        function="orders",
        request_id="req-1",
        account_id="123456789012",
        now=NOW,
        caller=caller,
    )


def test_a_get_becomes_the_2_0_event_field_for_field() -> None:
    request = UrlRequest(
        method="GET",
        path="/my/path",
        query="parameter1=value1&parameter1=value2&parameter2=a%20b&empty=",
        headers=[
            ("Host", "127.0.0.1:9001"),
            ("User-Agent", "curl/8.0"),
            ("X-Multi", "one"),
            ("Cookie", "cookie1=a; cookie2=b"),
            ("x-multi", "two"),
        ],
        body=b"",
        source_ip="10.0.0.7",
        scheme="https",
        port=9001,
    )
    assert event_of(request) == {
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": "/my/path",
        "rawQueryString": "parameter1=value1&parameter1=value2&parameter2=a%20b&empty=",
        "cookies": ["cookie1=a", "cookie2=b"],
        "headers": {
            "host": "127.0.0.1:9001",
            "user-agent": "curl/8.0",
            "x-multi": "one,two",
            "x-forwarded-for": "10.0.0.7",
            "x-forwarded-proto": "https",
            "x-forwarded-port": "9001",
        },
        "queryStringParameters": {"parameter1": "value1,value2", "parameter2": "a b", "empty": ""},
        "requestContext": {
            "accountId": "anonymous",
            "apiId": url_id("orders"),
            "domainName": "127.0.0.1:9001",
            "domainPrefix": "127",
            "http": {
                "method": "GET",
                "path": "/my/path",
                "protocol": "HTTP/1.1",
                "sourceIp": "10.0.0.7",
                "userAgent": "curl/8.0",
            },
            "requestId": "req-1",
            "routeKey": "$default",
            "stage": "$default",
            "time": "12/Mar/2026:19:03:58 +0000",
            "timeEpoch": 1773342238390,
        },
        "isBase64Encoded": False,
    }


def test_no_query_no_cookies_and_a_signed_caller() -> None:
    request = UrlRequest("POST", "/", "", [("content-type", "application/json")], b"{}", "::1")
    event = event_of(request, Caller("AKIAEXAMPLE", "123456789012"))
    assert "queryStringParameters" not in event and "cookies" not in event
    assert event["body"] == "{}" and event["isBase64Encoded"] is False
    assert event["requestContext"]["accountId"] == "123456789012"
    iam = event["requestContext"]["authorizer"]["iam"]
    assert iam["accessKey"] == "AKIAEXAMPLE" and iam["accountId"] == "123456789012"
    assert iam["userArn"] == "arn:aws:iam::123456789012:user/AKIAEXAMPLE"
    assert len(url_id("orders")) == 32 and url_id("orders") != url_id("other")


@pytest.mark.parametrize(
    ("content_type", "body", "text"),
    [
        ("application/json", b'{"a": 1}', True),
        ("text/plain; charset=utf-8", "héllo".encode(), True),
        ("application/vnd.api+json", b"{}", True),
        ("application/xml", b"<a/>", True),
        ("application/octet-stream", b"\x00\xff", False),
        ("application/x-www-form-urlencoded", b"a=1&b=2", False),
        ("image/png", b"\x89PNG", False),
        (None, b"plain", False),
        ("text/plain", b"\xff\xfe not utf-8", False),
    ],
)
def test_a_body_is_text_or_base64_by_its_type(
    content_type: str | None, body: bytes, text: bool
) -> None:
    headers = [("content-type", content_type)] if content_type else []
    event = event_of(UrlRequest("POST", "/", "", headers, body, "::1"))
    assert event["isBase64Encoded"] is not text
    assert event["body"] == (body.decode() if text else base64.b64encode(body).decode())


def test_a_forwarded_for_header_gets_the_callers_address_after_its_own() -> None:
    request = UrlRequest("GET", "/", "", [("X-Forwarded-For", "203.0.113.9")], b"", "10.0.0.7")
    headers = event_of(request)["headers"]
    assert headers["x-forwarded-for"] == "203.0.113.9, 10.0.0.7"
    assert headers["x-forwarded-proto"] == "http" and "x-forwarded-port" not in headers


def test_is_text_follows_lambdas_list() -> None:
    assert is_text("TEXT/HTML") and is_text("application/javascript")
    assert not is_text("multipart/form-data; boundary=x") and not is_text("")


def test_a_structured_result_is_the_response() -> None:
    result = {
        "statusCode": 201,
        "headers": {"Content-Type": "text/plain", "X-Count": 3, "Content-Length": "999"},
        "cookies": ["a=1; Path=/", "b=2"],
        "body": "created",
    }
    response = http_response(json.dumps(result).encode())
    assert response.status == 201
    assert response.headers == [
        ("Content-Type", "text/plain"),
        ("X-Count", "3"),
        ("set-cookie", "a=1; Path=/"),
        ("set-cookie", "b=2"),
    ]
    assert response.body == b"created"


def test_a_base64_body_is_decoded_and_a_missing_one_is_empty() -> None:
    encoded = {"statusCode": 200, "body": base64.b64encode(b"\x00\xff").decode()}
    assert http_response(json.dumps({**encoded, "isBase64Encoded": True}).encode()).body == (
        b"\x00\xff"
    )
    assert http_response(b'{"statusCode": 204}').body == b""
    assert http_response(b'{"statusCode": "302", "headers": {"Location": "/x"}}').status == 302


@pytest.mark.parametrize(
    "result", [b'"Hello, world!"', b'{"message": "hi"}', b"[1, 2]", b"null", b"42"]
)
def test_any_other_json_is_a_200_json_body(result: bytes) -> None:
    response = http_response(result)
    assert (response.status, response.body) == (200, result)
    assert response.headers == [("content-type", "application/json")]


@pytest.mark.parametrize(
    "result",
    [
        {"statusCode": "teapot"},
        {"statusCode": 99},
        {"statusCode": 101},
        {"statusCode": True},
        {"statusCode": 200, "headers": ["x"]},
        {"statusCode": 200, "headers": {"x": {"y": 1}}},
        {"statusCode": 200, "cookies": "a=1"},
        {"statusCode": 200, "body": "%%%", "isBase64Encoded": True},
    ],
)
def test_a_result_that_is_no_response_is_bad(result: dict[str, Any]) -> None:
    with pytest.raises(BadResponse):
        http_response(json.dumps(result).encode())


CORS = Cors(
    allow_origins=("https://shop.example",),
    allow_methods=("GET", "POST"),
    allow_headers=("Content-Type", "X-Token"),
    expose_headers=("X-Custom",),
    max_age_s=300,
    allow_credentials=True,
)


def test_a_preflight_is_answered_from_the_config() -> None:
    asked = {
        "origin": "https://shop.example",
        "access-control-request-method": "POST",
        "access-control-request-headers": "content-type, x-token",
    }
    assert is_preflight("OPTIONS", asked) and not is_preflight("GET", asked)
    assert dict(preflight(CORS, asked)) == {
        "Access-Control-Allow-Origin": "https://shop.example",
        "Access-Control-Allow-Credentials": "true",
        "Access-Control-Allow-Methods": "GET, POST",
        "Access-Control-Allow-Headers": "Content-Type, X-Token",
        "Access-Control-Max-Age": "300",
        "Vary": "Origin",
    }
    for wrong in (
        {"origin": "https://evil.example"},
        {"access-control-request-method": "DELETE"},
        {"access-control-request-headers": "x-other"},
    ):
        assert preflight(CORS, {**asked, **wrong}) == [("Vary", "Origin")]


def test_an_answer_gets_cors_headers_for_an_allowed_origin() -> None:
    assert dict(response_headers(CORS, {"origin": "https://shop.example"})) == {
        "Access-Control-Allow-Origin": "https://shop.example",
        "Access-Control-Allow-Credentials": "true",
        "Access-Control-Expose-Headers": "X-Custom",
        "Vary": "Origin",
    }
    assert response_headers(CORS, {"origin": "https://evil.example"}) == [("Vary", "Origin")]
    anyone = Cors(allow_origins=("*",), allow_methods=("*",))
    assert dict(response_headers(anyone, {"origin": "https://x.example"}))[
        "Access-Control-Allow-Origin"
    ] == ("*")


def test_requests_find_their_function_by_path_or_host() -> None:
    assert target("127.0.0.1:9001", "/fn/orders/a/b?x=1") == ("orders", "/a/b", "x=1")
    assert target("127.0.0.1:9001", "/fn/orders") == ("orders", "/", "")
    assert target("127.0.0.1:9001", "/fn/orders/") == ("orders", "/", "")
    assert target("orders.lambda-url.local:9001", "/a?x=1") == ("orders", "/a", "x=1")
    assert target("127.0.0.1:9001", "/2015-03-31/functions/orders/invocations") is None


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ({"auth": "OPEN"}, "functions.f.function_url.auth"),
        ({}, "functions.f.function_url.auth"),
        ({"auth": "NONE", "cors": {"allow_methods": ["FETCH"]}}, "allow_methods"),
        ({"auth": "NONE", "cors": {"allow_origins": ["shop.example"]}}, "allow_origins"),
        ({"auth": "NONE", "cors": {"max_age": 90000}}, "max_age"),
        ({"auth": "NONE", "cors": {"allow_header": ["x"]}}, "allow_header: unknown key"),
        ({"auth": "NONE", "cors": {"allow_headers": ["bad header"]}}, "allow_headers"),
    ],
)
def test_a_wrong_function_url_names_its_key(url: dict[str, Any], says: str) -> None:
    with pytest.raises(ConfigError, match=says):
        parse_config({"functions": {"f": {"handler": "m:f", "function_url": url}}})


def test_a_function_url_given_as_url_says_which_key_it_is() -> None:
    with pytest.raises(ConfigError, match=r"functions\.f\.url: .*function_url: "):
        parse_config({"functions": {"f": {"handler": "m:f", "url": {"auth": "NONE"}}}})
    config = parse_config(
        {"functions": {"f": {"handler": "m:f", "function_url": {"auth": "AWS_IAM"}}}}
    )
    assert config.functions["f"].function_url is not None
    assert config.functions["f"].function_url.auth == "AWS_IAM"
