"""Trace context as Eventwire reads, carries and hands it on; when tracing is on."""

from __future__ import annotations

import pytest

from broker.errors import UsageError
from broker.observability.trace_config import configured, from_environment
from broker.observability.tracing import (
    NO_TRACING,
    TRACE_LINKS,
    TRACEPARENT,
    batch_context,
    from_xray,
    header_traceparent,
    incoming_traceparent,
    trace_id,
    xray_header,
)

PARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def test_lambdas_trace_header_carries_the_same_trace_and_span() -> None:
    header = xray_header(PARENT)
    assert header == "Root=1-4bf92f35-77b34da6a3ce929d0e0e4736;Parent=00f067aa0ba902b7;Sampled=1"
    assert from_xray(header) == PARENT
    assert xray_header(PARENT[:-2] + "00") is not None
    assert xray_header(PARENT[:-2] + "00").endswith("Sampled=0")  # type: ignore[union-attr]
    assert xray_header("not a traceparent") is None and xray_header(None) is None


def test_an_http_call_brings_its_traceparent_or_its_aws_trace_header() -> None:
    assert incoming_traceparent({"traceparent": PARENT}) == PARENT
    aws = {"X-Amzn-Trace-Id": "Root=1-4bf92f35-77b34da6a3ce929d0e0e4736;Parent=00f067aa0ba902b7"}
    assert incoming_traceparent(aws) == PARENT
    assert incoming_traceparent({"traceparent": "garbage"}) is None
    assert incoming_traceparent({}) is None


def test_a_header_is_text_or_bytes_and_must_be_valid() -> None:
    assert header_traceparent(PARENT.encode()) == PARENT
    assert header_traceparent(f" {PARENT} ") == PARENT
    zero = "00-00000000000000000000000000000000-00f067aa0ba902b7-01"
    assert header_traceparent(zero) is None and header_traceparent(7) is None
    assert trace_id(PARENT) == "4bf92f3577b34da6a3ce929d0e0e4736"


def test_a_batch_has_its_records_shared_parent_or_links_to_each() -> None:
    other = PARENT.replace("4bf9", "aaaa")
    assert batch_context([None, None]) == {}
    assert batch_context([PARENT, None, PARENT]) == {TRACEPARENT: PARENT}
    assert batch_context([PARENT, other, PARENT]) == {TRACE_LINKS: [PARENT, other]}


@pytest.mark.parametrize(
    ("env", "on"),
    [
        ({}, False),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, True),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://collector:4318/v1/traces"}, True),
        ({"OTEL_TRACES_EXPORTER": "console"}, True),
        ({"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c"}, False),
        ({"OTEL_SDK_DISABLED": "true", "OTEL_TRACES_EXPORTER": "otlp"}, False),
    ],
)
def test_the_otel_variables_say_whether_to_trace(env: dict[str, str], on: bool) -> None:
    assert configured(env) is on
    tracing = from_environment(env)
    assert tracing.enabled is on
    tracing.shutdown()
    assert (tracing is NO_TRACING) is not on


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"OTEL_TRACES_EXPORTER": "zipkin"}, "OTEL_TRACES_EXPORTER: unknown exporter 'zipkin'"),
        (
            {"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"},
            "OTEL_EXPORTER_OTLP_PROTOCOL: 'grpc' is not supported",
        ),
    ],
)
def test_a_setting_that_cannot_work_is_named(env: dict[str, str], named: str) -> None:
    with pytest.raises(UsageError, match=named):
        from_environment(env)
