"""Reading ``eventwire.yaml``: the models of :mod:`broker.config`, then every concept's checks.

Loading validates everything and reports the first problem with the file, line,
key path and what was expected::

    eventwire.yaml:12: functions.flaky.retry.max_atempts: unknown key;
    expected one of: backoff, max_attempts, max_event_age

The models check the shape of each key. What needs another concept is checked
here, by that concept's own code: destination URIs (:mod:`broker.destinations`),
schedule expressions (:mod:`broker.sources.schedules`), invoker keys and
external destinations (:mod:`broker.functions`).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from broker.config.errors import KeyPath, config_error, describe_validation_error
from broker.config.mappings import check_mappings
from broker.config.models import ProjectConfig
from broker.config.notifications import check_object_notifications
from broker.config.yaml_lines import load_yaml_with_lines
from broker.destinations import parse_destination
from broker.errors import ConfigError
from broker.functions.delivery import check_destinations
from broker.functions.invoker_settings import check_invoker_keys
from broker.sources.schedules import check_expression


def load_config(path: str | Path) -> ProjectConfig:
    """Read and validate a configuration file; a :class:`ConfigError` names the place."""
    path = Path(path)
    data, lines = load_yaml_with_lines(path)
    return parse_config(data, source=str(path), lines=lines)


def parse_config(
    data: Any, *, source: str = "<config>", lines: dict[KeyPath, int] | None = None
) -> ProjectConfig:
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(
            f"{source}: expected a mapping at the top level, got {type(data).__name__}"
        )
    lines = lines or {}
    try:
        config = ProjectConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(describe_validation_error(exc, ProjectConfig, source, lines)) from None
    _check_expressions(config, source, lines)
    _check_references(config, source, lines)
    check_mappings(config.mappings, config.functions, source, lines)
    check_object_notifications(config.object_notifications, config.functions, source, lines)
    for name, function in config.functions.items():
        check_invoker_keys(name, function, source, lines)
    check_destinations(config, source, lines)
    return config


def _check_expressions(config: ProjectConfig, source: str, lines: Mapping[KeyPath, int]) -> None:
    for name, schedule in config.schedules.items():
        try:
            check_expression(schedule.expression)
        except ValueError as exc:
            raise config_error(source, lines, ("schedules", name, "expression"), str(exc)) from None


def _destination_uris(config: ProjectConfig) -> Iterator[tuple[KeyPath, str]]:
    """Every destination URI in the file, with its key path, in the file's order of sections."""
    for name, function in config.functions.items():
        for key in ("on_success", "on_failure", "dead_letter"):
            uri = getattr(function, key)
            if uri is not None:
                yield ("functions", name, key), uri
    for name, schedule in config.schedules.items():
        for key in ("on_success", "on_failure"):
            uri = getattr(schedule, key)
            if uri is not None:
                yield ("schedules", name, key), uri
    for index, mapping in enumerate(config.mappings):
        if mapping.on_failure is not None:
            yield ("mappings", str(index), "on_failure"), mapping.on_failure


def _check_references(config: ProjectConfig, source: str, lines: Mapping[KeyPath, int]) -> None:
    """Destination URIs parse, and the functions they and schedules name are configured."""
    known = ", ".join(sorted(config.functions)) or "none"
    for path, uri in _destination_uris(config):
        try:
            target = parse_destination(uri).function
        except ValueError as exc:
            raise config_error(source, lines, path, str(exc)) from None
        if target is not None and path[-1] != "dead_letter" and target not in config.functions:
            raise config_error(
                source,
                lines,
                path,
                f"unknown function {target!r} in destination {uri!r}; "
                f"configured functions: {known}",
            )
    for name, schedule in config.schedules.items():
        if schedule.function not in config.functions:
            raise config_error(
                source,
                lines,
                ("schedules", name, "function"),
                f"schedule {name!r} invokes unknown function {schedule.function!r}; "
                f"configured functions: {known}",
            )
