"""EventBridge event patterns: compiled once, matched against decoded JSON.

A pattern is a JSON object whose shape follows the event's. A key whose
value is an object descends into the event; a key whose value is a list is a
leaf: the field matches when any rule in the list matches any of its values
(an array in the event matches when one of its elements does). Keys of one
object must all match (AND); ``$or`` takes a list of patterns, one of which
must match at that level.

Leaf rules (Lambda's event filtering uses the same syntax)::

    "a string", 12.5, true, null            equals (numbers compare by value)
    {"prefix": "us-"}                       {"prefix": {"equals-ignore-case": "US-"}}
    {"suffix": ".png"}                      {"suffix": {"equals-ignore-case": ".PNG"}}
    {"equals-ignore-case": "alice"}
    {"anything-but": "x" | 5 | ["x", "y"] | {"prefix": …} | {"suffix": …}
                     | {"equals-ignore-case": … } | {"wildcard": …}}
    {"numeric": [">", 0, "<=", 5]}          {"numeric": ["=", 100]}
    {"exists": true | false}
    {"wildcard": "dir/*.png"}               (\\* is a literal star, \\\\ a backslash)
    {"cidr": "10.0.0.0/24"}

:func:`compile_pattern` rejects a malformed pattern with a :class:`PatternError`
naming the place (``price.numeric: …``) and what was expected.
"""

from __future__ import annotations

import ipaddress
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

Rule = Callable[[Any], bool]
"""A test of one leaf value (a string, number, boolean or null) from the event."""

OPERATORS = (
    "anything-but",
    "cidr",
    "equals-ignore-case",
    "exists",
    "numeric",
    "prefix",
    "suffix",
    "wildcard",
)
_NUMERIC_OPS = ("=", "<", "<=", ">", ">=")


class PatternError(ValueError):
    """A pattern is malformed; the message names where and what was expected."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path}: {message}" if path else message)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _key(value: Any) -> tuple[str, Any]:
    """A value's identity for equality: numbers by value, never equal to booleans."""
    if value is None:
        return ("null", None)
    if isinstance(value, bool):
        return ("bool", value)
    if _is_number(value):
        return ("number", float(value))
    if isinstance(value, str):
        return ("string", value)
    return ("other", id(value))


@dataclass(frozen=True, slots=True)
class _Leaf:
    name: str
    rules: tuple[Rule, ...]
    exists: bool | None  # an {"exists": …} rule among the rules, if any

    def matches(self, event: Mapping[str, Any]) -> bool:
        values = _leaf_values(event[self.name]) if self.name in event else []
        if self.exists is not None and bool(values) == self.exists:
            return True
        return any(rule(value) for value in values for rule in self.rules)


@dataclass(frozen=True, slots=True)
class _Nested:
    name: str
    pattern: Pattern

    def matches(self, event: Mapping[str, Any]) -> bool:
        value = event.get(self.name)
        if isinstance(value, Mapping):
            return self.pattern.matches(value)
        objects = [v for v in value if isinstance(v, Mapping)] if isinstance(value, list) else []
        if objects:
            return any(self.pattern.matches(item) for item in objects)
        # Absent (or not an object): only constraints satisfied by absence hold.
        return self.pattern.matches({})


@dataclass(frozen=True, slots=True)
class Pattern:
    """A compiled pattern; :meth:`matches` tests one decoded JSON object."""

    fields: tuple[_Leaf | _Nested, ...]
    alternatives: tuple[tuple[Pattern, ...], ...]  # each ``$or``: one must match

    def matches(self, event: Mapping[str, Any]) -> bool:
        return all(field.matches(event) for field in self.fields) and all(
            any(option.matches(event) for option in group) for group in self.alternatives
        )


def _leaf_values(value: Any) -> list[Any]:
    """The leaf values a field holds: itself, or the scalars of an array (flattened)."""
    if isinstance(value, Mapping):
        return []
    if isinstance(value, list):
        return [leaf for item in value for leaf in _leaf_values(item)]
    return [value]


def compile_pattern(pattern: Any, path: str = "") -> Pattern:
    """Compile ``pattern`` (a decoded JSON object) or raise :class:`PatternError`."""
    if not isinstance(pattern, Mapping):
        raise PatternError(path, f"expected an object of fields, got {_show(pattern)}")
    if not pattern:
        raise PatternError(path, "an empty pattern matches nothing; name at least one field")
    fields: list[_Leaf | _Nested] = []
    alternatives: list[tuple[Pattern, ...]] = []
    for name, value in pattern.items():
        where = f"{path}.{name}" if path else str(name)
        if not isinstance(name, str):
            raise PatternError(where, "field names must be strings")
        if name == "$or":
            alternatives.append(_compile_or(value, where))
        elif name.startswith("$"):
            raise PatternError(where, f"unknown keyword {name!r}; the only one is '$or'")
        elif isinstance(value, Mapping):
            fields.append(_Nested(name, compile_pattern(value, where)))
        elif isinstance(value, list):
            fields.append(_compile_leaf(name, value, where))
        else:
            raise PatternError(
                where,
                f"expected a list of values or rules (e.g. [{_show(value)}]) "
                f"or a nested object, got {_show(value)}",
            )
    return Pattern(tuple(fields), tuple(alternatives))


def _compile_or(value: Any, path: str) -> tuple[Pattern, ...]:
    if not isinstance(value, list) or not value:
        raise PatternError(path, "expected a non-empty list of patterns")
    return tuple(compile_pattern(item, f"{path}[{i}]") for i, item in enumerate(value))


def _compile_leaf(name: str, values: list[Any], path: str) -> _Leaf:
    if not values:
        raise PatternError(path, "an empty list matches nothing; give at least one value or rule")
    rules: list[Rule] = []
    equals: set[tuple[str, Any]] = set()
    exists: bool | None = None
    for index, item in enumerate(values):
        where = f"{path}[{index}]"
        if isinstance(item, Mapping):
            rule = _compile_rule(item, where)
            if isinstance(rule, bool):  # {"exists": flag}
                exists = rule
            else:
                rules.append(rule)
        elif item is None or isinstance(item, str | bool) or _is_number(item):
            _check_number(item, where)
            equals.add(_key(item))
        else:
            raise PatternError(
                where, f"expected a string, number, boolean, null or rule, got {_show(item)}"
            )
    if equals:
        rules.append(_equals_rule(frozenset(equals)))
    return _Leaf(name, tuple(rules), exists)


def _equals_rule(keys: frozenset[tuple[str, Any]]) -> Rule:
    return lambda value: _key(value) in keys


def _compile_rule(rule: Mapping[str, Any], path: str) -> Rule | bool:
    """The compiled rule, or the flag of an ``exists`` rule."""
    if len(rule) != 1:
        raise PatternError(
            path, f"a rule has exactly one operator, got {sorted(map(str, rule)) or 'none'}"
        )
    operator, argument = next(iter(rule.items()))
    where = f"{path}.{operator}"
    if operator == "exists":
        if not isinstance(argument, bool):
            raise PatternError(where, f"expected true or false, got {_show(argument)}")
        return argument
    compiler = _RULES.get(operator)
    if compiler is None:
        raise PatternError(
            path, f"unknown operator {operator!r}; expected one of: {', '.join(OPERATORS)}"
        )
    return compiler(argument, where)


def _string(argument: Any, path: str) -> str:
    if not isinstance(argument, str):
        raise PatternError(path, f"expected a string, got {_show(argument)}")
    return argument


def _affix(argument: Any, path: str, test: Callable[[str, str], bool]) -> Rule:
    """``prefix``/``suffix``: a string, or ``{"equals-ignore-case": string}``."""
    if isinstance(argument, Mapping):
        if set(argument) != {"equals-ignore-case"}:
            raise PatternError(
                path, f'expected a string or {{"equals-ignore-case": "..."}}, got {_show(argument)}'
            )
        folded = _string(argument["equals-ignore-case"], f"{path}.equals-ignore-case").casefold()
        return lambda value: isinstance(value, str) and test(value.casefold(), folded)
    text = _string(argument, path)
    return lambda value: isinstance(value, str) and test(value, text)


def _prefix(argument: Any, path: str) -> Rule:
    return _affix(argument, path, str.startswith)


def _suffix(argument: Any, path: str) -> Rule:
    return _affix(argument, path, str.endswith)


def _strings(argument: Any, path: str) -> list[str]:
    """A string or a non-empty list of strings."""
    items = argument if isinstance(argument, list) else [argument]
    if not items:
        raise PatternError(path, "expected a string or a non-empty list of strings")
    return [_string(item, path) for item in items]


def _equals_ignore_case(argument: Any, path: str) -> Rule:
    folded = frozenset(text.casefold() for text in _strings(argument, path))
    return lambda value: isinstance(value, str) and value.casefold() in folded


def _wildcard(argument: Any, path: str) -> Rule:
    regexes = [_wildcard_regex(text, path) for text in _strings(argument, path)]
    return lambda value: isinstance(value, str) and any(r.fullmatch(value) for r in regexes)


def _wildcard_regex(text: str, path: str) -> re.Pattern[str]:
    parts: list[str] = []
    index = 0
    while index < len(text):
        char = text[index]
        if char == "\\":
            following = text[index + 1 : index + 2]
            if following not in ("*", "\\"):
                raise PatternError(path, f"in {text!r}: '\\' may only escape '*' or '\\'")
            parts.append(re.escape(following))
            index += 2
            continue
        if char == "*":
            if text[index + 1 : index + 2] == "*":
                raise PatternError(path, f"in {text!r}: consecutive '*' are not allowed")
            parts.append(".*")
        else:
            parts.append(re.escape(char))
        index += 1
    return re.compile("".join(parts), re.DOTALL)


def _cidr(argument: Any, path: str) -> Rule:
    text = _string(argument, path)
    try:
        network = ipaddress.ip_network(text, strict=False)
    except ValueError:
        raise PatternError(path, f"expected a CIDR block like 10.0.0.0/24, got {text!r}") from None

    def rule(value: Any) -> bool:
        if not isinstance(value, str):
            return False
        try:
            return ipaddress.ip_address(value) in network
        except ValueError:
            return False

    return rule


def _numeric(argument: Any, path: str) -> Rule:
    expected = 'expected operator/number pairs like [">", 0, "<=", 5] or ["=", 100]'
    if not isinstance(argument, list) or not argument or len(argument) % 2:
        raise PatternError(path, f"{expected}, got {_show(argument)}")
    lower: tuple[str, float] | None = None
    upper: tuple[str, float] | None = None
    equal: float | None = None
    for op, bound in zip(argument[::2], argument[1::2], strict=True):
        if op not in _NUMERIC_OPS:
            raise PatternError(path, f"unknown comparison {op!r}; expected one of: =, <, <=, >, >=")
        if not _is_number(bound) or not math.isfinite(bound):
            raise PatternError(path, f"{op!r} needs a number, got {_show(bound)}")
        if op == "=":
            if len(argument) != 2:
                raise PatternError(path, "'=' cannot be combined with other comparisons")
            equal = float(bound)
        elif op.startswith(">"):
            if lower is not None:
                raise PatternError(path, "more than one lower bound ('>' or '>=')")
            lower = (op, float(bound))
        else:
            if upper is not None:
                raise PatternError(path, "more than one upper bound ('<' or '<=')")
            upper = (op, float(bound))
    if lower and upper and not _overlap(lower, upper):
        raise PatternError(path, f"the range {_show(argument)} contains no number")
    return _numeric_rule(equal, lower, upper)


def _overlap(lower: tuple[str, float], upper: tuple[str, float]) -> bool:
    if lower[1] != upper[1]:
        return lower[1] < upper[1]
    return lower[0] == ">=" and upper[0] == "<="


def _numeric_rule(
    equal: float | None, lower: tuple[str, float] | None, upper: tuple[str, float] | None
) -> Rule:
    def rule(value: Any) -> bool:
        if not _is_number(value):
            return False
        number = float(value)
        if equal is not None:
            return number == equal
        if lower is not None and not (
            number > lower[1] or (lower[0] == ">=" and number == lower[1])
        ):
            return False
        return upper is None or number < upper[1] or (upper[0] == "<=" and number == upper[1])

    return rule


def _anything_but(argument: Any, path: str) -> Rule:
    if isinstance(argument, Mapping):
        if len(argument) != 1 or next(iter(argument)) not in _ANYTHING_BUT:
            raise PatternError(
                path,
                "expected a value, a list of values, or one of "
                f"{{{', '.join(repr(k) for k in _ANYTHING_BUT)}: …}}, got {_show(argument)}",
            )
        operator, inner = next(iter(argument.items()))
        excluded = _ANYTHING_BUT[operator](inner, f"{path}.{operator}")
        return lambda value: not excluded(value)
    items = argument if isinstance(argument, list) else [argument]
    if not items:
        raise PatternError(path, "expected a value or a non-empty list of values")
    for item in items:
        if not (isinstance(item, str) or _is_number(item)):
            raise PatternError(path, f"expected strings or numbers, got {_show(item)}")
        _check_number(item, path)
    keys = frozenset(_key(item) for item in items)
    return lambda value: _key(value) not in keys


def _check_number(value: Any, path: str) -> None:
    if _is_number(value) and not math.isfinite(value):
        raise PatternError(path, f"expected a finite number, got {value!r}")


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


_RULES: dict[str, Callable[[Any, str], Rule]] = {
    "anything-but": _anything_but,
    "cidr": _cidr,
    "equals-ignore-case": _equals_ignore_case,
    "numeric": _numeric,
    "prefix": _prefix,
    "suffix": _suffix,
    "wildcard": _wildcard,
}
_ANYTHING_BUT: dict[str, Callable[[Any, str], Rule]] = {
    "prefix": _prefix,
    "suffix": _suffix,
    "equals-ignore-case": _equals_ignore_case,
    "wildcard": _wildcard,
}
