"""Turning a pydantic ``ValidationError`` into one line a person can act on."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, get_args, get_origin

from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from broker.errors import ConfigError

KeyPath = tuple[str, ...]


def describe_validation_error(
    exc: ValidationError,
    root: type[BaseModel],
    source: str,
    lines: dict[KeyPath, int],
) -> str:
    """``file:line: dotted.key: what is wrong; what was expected`` for the first error."""
    error = exc.errors()[0]
    path = tuple(str(part) for part in error["loc"])
    where = _where(source, nearest_line(path, lines))
    dotted = ".".join(path) or "(top level)"
    return f"{where}: {dotted}: {_explain(error, root, path)}"


def _explain(error: ErrorDetails, root: type[BaseModel], path: KeyPath) -> str:
    kind = error["type"]
    if kind == "extra_forbidden":
        model = _model_at(root, path[:-1])
        expected = ", ".join(sorted(_keys(model))) if model else "?"
        return f"unknown key {path[-1]!r}; expected one of: {expected}"
    if kind == "missing":
        return "required key is missing"
    message = error["msg"].removeprefix("Value error, ")
    given = error.get("input")
    if kind.endswith("_type") or kind.endswith("_parsing"):
        return f"{message}, got {given!r}"
    return message


def _keys(model: type[BaseModel]) -> list[str]:
    return [field.alias or name for name, field in model.model_fields.items()]


def _model_at(root: type[BaseModel], path: KeyPath) -> type[BaseModel] | None:
    """The model class validating the mapping at ``path`` (skipping dict keys)."""
    current: Any = root
    for part in path:
        if part.isdigit() and isinstance(current, type) and issubclass(current, BaseModel):
            continue  # an index into a list of models (``_unwrap`` took off the list)
        if isinstance(current, type) and issubclass(current, BaseModel):
            field = next((f for n, f in current.model_fields.items() if part in (n, f.alias)), None)
            if field is None:
                return None
            current = _unwrap(field.annotation)
        elif get_origin(current) is dict:
            current = _unwrap(get_args(current)[1])
        else:
            return None
    return current if isinstance(current, type) and issubclass(current, BaseModel) else None


def _unwrap(annotation: Any) -> Any:
    """``X`` from ``X | None``; dicts and models as they are."""
    args = [a for a in get_args(annotation) if a is not type(None)]
    if get_origin(annotation) is not dict and len(args) == 1:
        return _unwrap(args[0])
    return annotation


def config_error(
    source: str, lines: Mapping[KeyPath, int], path: KeyPath, message: str
) -> ConfigError:
    """``file:line: dotted.key: message`` for the key at ``path``, at the nearest line
    known for it or a key above it: what every check of the file raises."""
    return ConfigError(f"{_where(source, nearest_line(path, lines))}: {'.'.join(path)}: {message}")


def _where(source: str, line: int | None) -> str:
    return f"{source}:{line}" if line else source


def nearest_line(path: KeyPath, lines: Mapping[KeyPath, int]) -> int | None:
    """The line of ``path`` in the file, else of the nearest key above it."""
    for end in range(len(path), 0, -1):
        if path[:end] in lines:
            return lines[path[:end]]
    return None
