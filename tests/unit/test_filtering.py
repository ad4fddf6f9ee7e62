"""Mapping filters follow Lambda's rules for JSON and plain-string record data."""

from __future__ import annotations

import json
from typing import Any

import pytest

from broker.events.filters import FilterError, compile_filters


def kafka(*patterns: Any) -> Any:
    return compile_filters(list(patterns), data_key="value")


def test_no_filters_deliver_everything() -> None:
    record_filter = kafka()
    assert record_filter.accepts_all
    assert record_filter.matches(b"\xff\xfe not utf-8")
    assert record_filter.matches(None)


def test_lambda_kafka_example_filters_on_the_decoded_value() -> None:
    record_filter = kafka({"value": {"device_ID": [{"prefix": "AB"}]}})
    value = {"device_ID": "AB1234", "session": {"start_time": "t", "duration": 162}}
    assert record_filter.matches(json.dumps(value).encode())
    assert not record_filter.matches(json.dumps({**value, "device_ID": "CD1"}).encode())


def test_lambda_mq_examples_json_and_plain_string() -> None:
    numeric = compile_filters([{"data": {"timeout": [{"numeric": [">", 0]}]}}], data_key="data")
    assert numeric.matches(b'{"timeout": 3, "IPAddress": "203.0.113.254"}')
    assert not numeric.matches(b'{"timeout": 0, "IPAddress": "203.0.113.254"}')
    plain = compile_filters([{"data": [{"prefix": "Result: "}]}], data_key="data")
    assert plain.matches(b"Result: 42")
    assert not plain.matches(b"Error: 42")


def test_json_data_never_matches_a_plain_string_pattern_and_vice_versa() -> None:
    record_filter = kafka({"value": [{"prefix": "{"}]}, {"value": {"kind": ["a"]}})
    assert not record_filter.matches(b'{"kind": "b"}')  # JSON: only the object pattern applies
    assert record_filter.matches(b'{"kind": "a"}')
    assert record_filter.matches(b"{not json")  # plain text: only the prefix pattern applies
    assert not kafka({"value": {"kind": [{"exists": False}]}}).matches(b"{not json")


def test_plain_string_patterns_see_the_whole_text_of_non_json_data() -> None:
    record_filter = kafka({"value": ["hello", {"suffix": "!"}]})
    assert record_filter.matches(b"hello")
    assert record_filter.matches("wow!")
    assert not record_filter.matches(b"hello world")
    # A JSON scalar is not a JSON document to filter into: it is matched as text.
    assert kafka({"value": ["42"]}).matches(b"42")
    assert not kafka({"value": {"n": [42]}}).matches(b"42")


def test_data_that_is_not_utf8_matches_no_pattern() -> None:
    assert not kafka({"value": [{"exists": True}]}).matches(b"\xff\xfe")
    assert not kafka({"value": [{"anything-but": "x"}]}).matches(b"\xc3\x28")


def test_a_record_is_delivered_when_any_pattern_matches() -> None:
    record_filter = kafka(
        {"value": {"type": ["created"]}},
        {"value": {"amount": [{"numeric": [">", 100]}]}},
    )
    assert record_filter.matches(b'{"type": "created", "amount": 1}')
    assert record_filter.matches(b'{"type": "deleted", "amount": 500}')
    assert not record_filter.matches(b'{"type": "deleted", "amount": 5}')


def test_patterns_may_be_json_text_as_in_lambdas_filter_criteria() -> None:
    record_filter = kafka('{ "value" : { "device_ID" : [ { "prefix": "AB" } ] } }')
    assert record_filter.matches(b'{"device_ID": "AB1"}')


def test_aliases_and_metadata_keys() -> None:
    record_filter = compile_filters(
        [{"body": {"a": [1]}, "partitionKey": ["p1"]}],
        data_key="data",
        data_aliases=("body",),
        metadata_keys=("partitionKey",),
    )
    assert record_filter.matches(b'{"a": 1}', {"partitionKey": "p1"})
    assert not record_filter.matches(b'{"a": 1}', {"partitionKey": "p2"})
    assert record_filter.matches_json({"a": 1}, {"partitionKey": "p1"})


def test_already_decoded_json_is_matched_directly() -> None:
    record_filter = compile_filters([{"data": {"page": [{"prefix": "/shop"}]}}], data_key="data")
    assert record_filter.matches_json({"page": "/shop/cart", "user": "u1"})
    assert not record_filter.matches_json({"page": "/home"})


@pytest.mark.parametrize(
    ("patterns", "message", "index"),
    [
        ([{"value": {"a": [1]}}] * 6, "6 filter patterns; a mapping has at most 5", None),
        (["{not json"], "filter 1: not valid JSON", 1),
        ([{"value": {"a": [1]}}, {"key": {"a": [1]}}], "filter 2: unknown top-level key 'key'", 2),
        ([{"value": {"a": [{"numeric": [">"]}]}}], "filter 1: value.a[0].numeric: expected", 1),
        ([[1, 2]], "filter 1: expected a pattern object", 1),
        ([{}], "filter 1: expected a pattern object", 1),
        ([{"value": 5}], "filter 1: value: expected a list of values or rules", 1),
    ],
)
def test_invalid_filters_are_rejected_with_the_reason(
    patterns: list[Any], message: str, index: int | None
) -> None:
    with pytest.raises(FilterError) as caught:
        compile_filters(patterns, data_key="value")
    assert message in str(caught.value)
    assert caught.value.index == index


def test_data_nested_past_any_decoder_is_text_to_the_filters() -> None:
    deep = b"[" * 200_000 + b"]" * 200_000  # past any Python's decoder (3.13's goes deeper)
    assert kafka({"value": [{"prefix": "[[["}]}).matches(deep)
    assert not kafka({"value": {"n": [1]}}).matches(deep)
