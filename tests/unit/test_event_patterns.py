"""EventBridge event patterns: AWS's documented examples, edge cases, and rejected patterns."""

from __future__ import annotations

from typing import Any

import pytest

from broker.events.patterns import PatternError, compile_pattern


def matches(pattern: dict[str, Any], event: dict[str, Any]) -> bool:
    return compile_pattern(pattern).matches(event)


# Lambda's "Filter rule syntax" table and EventBridge's comparison operators, one row each:
# (pattern, an event that matches, an event that does not).
DOCUMENTED = [
    ({"UserID": [None]}, {"UserID": None}, {"UserID": "u-1"}),
    ({"LastName": [""]}, {"LastName": ""}, {"LastName": "Doe"}),
    ({"Name": ["Alice"]}, {"Name": "Alice"}, {"Name": "alice"}),
    ({"Name": [{"equals-ignore-case": "alice"}]}, {"Name": "ALICE"}, {"Name": "Alicia"}),
    (
        {"Location": ["New York"], "Day": ["Monday"]},
        {"Location": "New York", "Day": "Monday"},
        {"Location": "New York", "Day": "Tuesday"},
    ),
    ({"PaymentType": ["Credit", "Debit"]}, {"PaymentType": "Debit"}, {"PaymentType": "Cash"}),
    (
        {"$or": [{"Location": ["New York"]}, {"Day": ["Monday"]}]},
        {"Location": "Boston", "Day": "Monday"},
        {"Location": "Boston", "Day": "Tuesday"},
    ),
    ({"Weather": [{"anything-but": ["Raining"]}]}, {"Weather": "Sunny"}, {"Weather": "Raining"}),
    ({"Price": [{"numeric": ["=", 100]}]}, {"Price": 100.0}, {"Price": 100.5}),
    ({"Price": [{"numeric": [">", 10, "<=", 20]}]}, {"Price": 20}, {"Price": 10}),
    ({"ProductName": [{"exists": True}]}, {"ProductName": "x"}, {"Other": "x"}),
    ({"ProductName": [{"exists": False}]}, {"Other": "x"}, {"ProductName": "x"}),
    ({"Region": [{"prefix": "us-"}]}, {"Region": "us-east-1"}, {"Region": "eu-west-1"}),
    ({"FileName": [{"suffix": ".png"}]}, {"FileName": "a.png"}, {"FileName": "a.jpg"}),
    (
        {"service": [{"prefix": {"equals-ignore-case": "eventb"}}]},
        {"service": "EventBridge"},
        {"service": "Lambda"},
    ),
    (
        {"service": [{"suffix": {"equals-ignore-case": "tBridge"}}]},
        {"service": "EVENTBRIDGE"},
        {"service": "Lambda"},
    ),
    ({"Region": [{"anything-but": {"prefix": "us-"}}]}, {"Region": "eu-1"}, {"Region": "us-1"}),
    (
        {"FileName": [{"anything-but": {"suffix": ".png"}}]},
        {"FileName": "a.txt"},
        {"FileName": "a.png"},
    ),
    (
        {"state": [{"anything-but": {"equals-ignore-case": "initializing"}}]},
        {"state": "running"},
        {"state": "INITIALIZING"},
    ),
    (
        {"FilePath": [{"anything-but": {"wildcard": "*/lib/*"}}]},
        {"FilePath": "/usr/bin/x"},
        {"FilePath": "/usr/lib/x"},
    ),
    (
        {"EventBusArn": [{"wildcard": "arn:aws:events:us-east-1:*:event-bus/*"}]},
        {"EventBusArn": "arn:aws:events:us-east-1:123456789012:event-bus/main"},
        {"EventBusArn": "arn:aws:events:eu-west-1:123456789012:event-bus/main"},
    ),
    ({"sourceIP": [{"cidr": "10.0.0.0/24"}]}, {"sourceIP": "10.0.0.7"}, {"sourceIP": "10.0.1.7"}),
    # Lambda's Kafka example: a nested field by prefix.
    (
        {"device_ID": [{"prefix": "AB"}]},
        {"device_ID": "AB1234", "session": {"duration": 162}},
        {"device_ID": "CD1234"},
    ),
    # EventBridge: a pattern value matches an event array when any element matches.
    (
        {"resources": ["arn:aws:ec2:us-east-1:123456789012:instance/i-b188560f"]},
        {"resources": ["arn:aws:ec2:us-east-1:123456789012:instance/i-b188560f", "other"]},
        {"resources": ["other"]},
    ),
]


@pytest.mark.parametrize(("pattern", "hit", "miss"), DOCUMENTED)
def test_documented_examples(
    pattern: dict[str, Any], hit: dict[str, Any], miss: dict[str, Any]
) -> None:
    compiled = compile_pattern(pattern)
    assert compiled.matches(hit)
    assert not compiled.matches(miss)


def test_nested_objects_and_and_semantics() -> None:
    pattern = {"detail": {"state": ["running"], "size": [{"numeric": [">=", 5]}]}}
    assert matches(pattern, {"detail": {"state": "running", "size": 5}})
    assert not matches(pattern, {"detail": {"state": "running", "size": 4}})
    assert not matches(pattern, {"detail": "running"})
    assert not matches(pattern, {})


def test_arrays_of_objects_match_one_element_at_a_time() -> None:
    pattern = {"items": {"sku": ["a"], "qty": [2]}}
    assert matches(pattern, {"items": [{"sku": "b", "qty": 1}, {"sku": "a", "qty": 2}]})
    assert not matches(pattern, {"items": [{"sku": "a", "qty": 1}, {"sku": "b", "qty": 2}]})


def test_numbers_compare_by_value_and_never_equal_strings_or_booleans() -> None:
    assert matches({"n": [300]}, {"n": 3.0e2})
    assert not matches({"n": [1]}, {"n": "1"})
    assert not matches({"n": [1]}, {"n": True})
    assert not matches({"flag": [True]}, {"flag": 1})
    assert matches({"flag": [False]}, {"flag": False})
    assert not matches({"n": [{"numeric": [">", 0]}]}, {"n": "5"})
    assert not matches({"n": [{"numeric": [">", 0]}]}, {"n": True})


@pytest.mark.parametrize(
    ("bounds", "inside", "outside"),
    [
        ([">", 0], [0.001, 1e9], [0, -1]),
        ([">=", 0, "<", 5], [0, 4.999], [5, -0.1]),
        (["<", 0], [-1], [0]),
        ([">=", 5, "<=", 5], [5], [4.9, 5.1]),
    ],
)
def test_numeric_ranges(bounds: list[Any], inside: list[float], outside: list[float]) -> None:
    pattern = compile_pattern({"x": [{"numeric": bounds}]})
    assert all(pattern.matches({"x": value}) for value in inside)
    assert not any(pattern.matches({"x": value}) for value in outside)


def test_exists_concerns_leaf_values() -> None:
    present = compile_pattern({"a": {"b": [{"exists": True}]}})
    absent = compile_pattern({"a": {"b": [{"exists": False}]}})
    assert present.matches({"a": {"b": None}})
    assert not present.matches({"a": {"b": {"c": 1}}})  # an object is not a leaf
    assert absent.matches({})  # a.b does not exist when a does not
    assert absent.matches({"a": "text"})
    assert not absent.matches({"a": {"b": 0}})
    assert not present.matches({"a": {"b": []}})


def test_anything_but_needs_the_field_and_applies_to_every_type() -> None:
    pattern = compile_pattern({"state": [{"anything-but": ["stopped", 0]}]})
    assert pattern.matches({"state": "running"})
    assert pattern.matches({"state": 1})
    assert not pattern.matches({"state": 0.0})
    assert not pattern.matches({})
    assert pattern.matches({"state": ["stopped", "running"]})  # one element is not excluded


def test_wildcards_escape_and_anchor() -> None:
    pattern = compile_pattern({"path": [{"wildcard": "dir/*.png"}]})
    assert pattern.matches({"path": "dir/a/b.png"})
    assert not pattern.matches({"path": "dir/a.png.bak"})
    assert not pattern.matches({"path": "xdir/a.png"})
    literal = compile_pattern({"v": [{"wildcard": "a\\*b"}]})
    assert literal.matches({"v": "a*b"})
    assert not literal.matches({"v": "axxb"})
    assert compile_pattern({"v": [{"wildcard": "a*"}]}).matches({"v": "a\nb"})


def test_or_combines_with_sibling_fields() -> None:
    pattern = compile_pattern(
        {"source": ["shop"], "$or": [{"total": [{"numeric": [">", 100]}]}, {"vip": [True]}]}
    )
    assert pattern.matches({"source": "shop", "total": 150})
    assert pattern.matches({"source": "shop", "total": 5, "vip": True})
    assert not pattern.matches({"source": "shop", "total": 5})
    assert not pattern.matches({"source": "other", "total": 500})


def test_unicode_case_folding() -> None:
    pattern = compile_pattern({"city": [{"equals-ignore-case": "straße"}]})
    assert pattern.matches({"city": "STRASSE"})


@pytest.mark.parametrize(
    ("pattern", "message"),
    [
        ({}, "an empty pattern matches nothing"),
        ({"a": "x"}, "a: expected a list of values or rules"),
        ({"a": []}, "a: an empty list matches nothing"),
        ({"a": [[1]]}, "a[0]: expected a string, number, boolean, null or rule"),
        ({"a": [{"prefx": "x"}]}, "a[0]: unknown operator 'prefx'; expected one of: anything-but"),
        ({"a": [{"prefix": "x", "suffix": "y"}]}, "a[0]: a rule has exactly one operator"),
        ({"a": [{"prefix": 5}]}, "a[0].prefix: expected a string"),
        ({"a": [{"exists": "yes"}]}, "a[0].exists: expected true or false"),
        ({"a": [{"numeric": [">", "5"]}]}, "a[0].numeric: '>' needs a number"),
        ({"a": [{"numeric": [">", 1, ">", 2]}]}, "more than one lower bound"),
        ({"a": [{"numeric": ["=", 1, "<", 2]}]}, "'=' cannot be combined"),
        ({"a": [{"numeric": [">", 5, "<", 1]}]}, "contains no number"),
        ({"a": [{"numeric": ["~", 1]}]}, "unknown comparison '~'"),
        ({"a": [{"numeric": [">"]}]}, "expected operator/number pairs"),
        ({"a": [{"wildcard": "a**b"}]}, "consecutive '*' are not allowed"),
        ({"a": [{"wildcard": "a\\b"}]}, "may only escape"),
        ({"a": [{"cidr": "10.0.0.300/8"}]}, "expected a CIDR block"),
        ({"a": [{"anything-but": {"numeric": [">", 1]}}]}, "a[0].anything-but: expected a value"),
        ({"a": [{"anything-but": []}]}, "expected a value or a non-empty list"),
        ({"a": [{"anything-but": [True]}]}, "expected strings or numbers"),
        ({"$and": [{"a": [1]}]}, "$and: unknown keyword '$and'"),
        ({"$or": [{"a": [1]}, "x"]}, "$or[1]: expected an object of fields"),
        ({"$or": []}, "$or: expected a non-empty list of patterns"),
        ({"d": {"e": {"f": [{"suffix": None}]}}}, "d.e.f[0].suffix: expected a string"),
    ],
)
def test_invalid_patterns_are_rejected_with_the_place(pattern: Any, message: str) -> None:
    with pytest.raises(PatternError) as caught:
        compile_pattern(pattern)
    assert message in str(caught.value)
