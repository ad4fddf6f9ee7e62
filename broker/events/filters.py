"""Event-source-mapping filters: which records a mapping hands to its function.

Lambda's rules for ``FilterCriteria``, applied to a record's data:

* a mapping has at most five patterns; a record is kept when **any** pattern
  matches it, and dropped (checkpointed, never invoked) when none does;
* each pattern names the record's data under one top-level key — ``value``
  for Kafka, ``data`` for RabbitMQ (``body`` is accepted too) and Redis
  Streams — plus, where a source has them, metadata keys;
* data that decodes as a JSON object (or array) is matched by a pattern whose
  data key holds an object: ``{"value": {"type": ["order_created"]}}``;
* data that is not JSON (a plain UTF-8 string, or a JSON scalar) is matched by
  a pattern whose data key holds a list of rules applied to the whole text:
  ``{"value": [{"prefix": "ERROR"}]}``;
* a JSON record never matches a plain-string pattern and a plain-string
  record never matches a JSON pattern; data that is not UTF-8 matches nothing.

Patterns are compiled once (:func:`compile_filters`); matching a record
decodes its data once, whatever the number of patterns.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from broker.events.patterns import Pattern, PatternError, compile_pattern

MAX_PATTERNS = 5
_NOT_UTF8 = object()


class FilterError(ValueError):
    """A filter is invalid; the message says which pattern, where, and what was expected.

    ``index`` is the 1-based number of the offending pattern (None: the list itself).
    """

    def __init__(self, message: str, index: int | None = None) -> None:
        super().__init__(message)
        self.index = index


@dataclass(frozen=True, slots=True)
class _Filter:
    pattern: Pattern
    data_mode: str  # "json", "text" or "none" (the pattern does not look at the data)

    def matches(self, event: Mapping[str, Any], data_is_json: bool) -> bool:
        if self.data_mode == "json" and not data_is_json:
            return False
        if self.data_mode == "text" and data_is_json:
            return False
        return self.pattern.matches(event)


@dataclass(frozen=True, slots=True)
class RecordFilter:
    """The compiled filters of one mapping."""

    data_key: str
    filters: tuple[_Filter, ...]

    @property
    def accepts_all(self) -> bool:
        """True when the mapping has no filters: every record is delivered."""
        return not self.filters

    def matches(self, data: bytes | str | None, metadata: Mapping[str, Any] | None = None) -> bool:
        """Whether a record whose data is ``data`` (raw bytes as read) is delivered."""
        if not self.filters:
            return True
        decoded = _decode(data)
        if decoded is _NOT_UTF8:
            return False
        is_json = isinstance(decoded, dict | list)
        event = {**(metadata or {}), self.data_key: decoded}
        return any(f.matches(event, is_json) for f in self.filters)

    def matches_json(self, value: Any, metadata: Mapping[str, Any] | None = None) -> bool:
        """Like :meth:`matches` for data already decoded from JSON (a Redis entry's fields)."""
        if not self.filters:
            return True
        is_json = isinstance(value, dict | list)
        event = {**(metadata or {}), self.data_key: value}
        return any(f.matches(event, is_json) for f in self.filters)


NO_FILTER = RecordFilter("value", ())


def compile_filters(
    patterns: Sequence[Any],
    *,
    data_key: str,
    data_aliases: Collection[str] = (),
    metadata_keys: Collection[str] = (),
    max_patterns: int = MAX_PATTERNS,
) -> RecordFilter:
    """Compile a mapping's patterns (objects, or JSON text as in Lambda's ``Pattern``).

    ``data_key`` names the record's data (``value``, ``data``); ``data_aliases``
    are other names accepted for it; ``metadata_keys`` the other top-level keys
    a pattern may use. Raises :class:`FilterError` naming the pattern (1-based)
    and the place within it.
    """
    if len(patterns) > max_patterns:
        raise FilterError(
            f"{len(patterns)} filter patterns; a mapping has at most {max_patterns} "
            "(a record is delivered when any of them matches)"
        )
    compiled = tuple(
        _compile_one(pattern, index, data_key, frozenset(data_aliases), frozenset(metadata_keys))
        for index, pattern in enumerate(patterns, start=1)
    )
    return RecordFilter(data_key, compiled)


def _compile_one(
    pattern: Any,
    index: int,
    data_key: str,
    aliases: frozenset[str],
    metadata_keys: frozenset[str],
) -> _Filter:
    where = f"filter {index}"
    if isinstance(pattern, str):
        try:
            pattern = json.loads(pattern)
        except json.JSONDecodeError as exc:
            message = f"{where}: not valid JSON: {exc.msg} at column {exc.colno}"
            raise FilterError(message, index) from None
    if not isinstance(pattern, Mapping) or not pattern:
        raise FilterError(
            f"{where}: expected a pattern object like {{{data_key}: {{field: [value]}}}}, "
            f"got {pattern!r}",
            index,
        )
    allowed = {data_key, *aliases, *metadata_keys}
    data_names = [key for key in pattern if key in (data_key, *aliases)]
    for key in pattern:
        if key not in allowed:
            raise FilterError(
                f"{where}: unknown top-level key {key!r}; a pattern filters on "
                f"{' or '.join(repr(k) for k in sorted(allowed))}",
                index,
            )
    if len(data_names) > 1:
        raise FilterError(f"{where}: {' and '.join(data_names)} name the same data", index)
    normalized = dict(pattern)
    mode = "none"
    if data_names:
        body = normalized.pop(data_names[0])
        normalized[data_key] = body
        mode = "json" if isinstance(body, Mapping) else "text"
    try:
        compiled = compile_pattern(normalized)
    except PatternError as exc:
        raise FilterError(f"{where}: {exc}", index) from None
    return _Filter(compiled, mode)


def _decode(data: bytes | str | None) -> Any:
    """The record's data as a filter sees it: parsed JSON, or the text itself."""
    if data is None:
        return None
    if isinstance(data, bytes | bytearray | memoryview):
        try:
            text = bytes(data).decode("utf-8")
        except UnicodeDecodeError:
            return _NOT_UTF8
    else:
        text = data
    try:
        value = json.loads(text)
    except (ValueError, RecursionError):
        return text
    return value if isinstance(value, dict | list) else text
