"""A schedule's overrides of its function's retries and destinations, applied at dispatch."""

from __future__ import annotations

from datetime import UTC, datetime

from broker.config.models import FunctionConfig, ScheduleConfig
from broker.config.settings import Settings
from broker.functions.catalog import Deployed
from broker.functions.overrides import effective
from broker.models import FunctionLimits
from pollers.schedule.source import SOURCE

SLOT = datetime(2026, 11, 24, 5, tzinfo=UTC)


def deployed() -> Deployed:
    config = FunctionConfig.model_validate(
        {"handler": "m:f", "retry": {"max_attempts": 3, "backoff": {"initial": "5s"}}}
    )
    return Deployed(
        name="f",
        config=config,
        invoker=None,  # type: ignore[arg-type]
        arn="arn",
        limits=FunctionLimits(lease_s=33),
        on_success=None,
        on_failure=None,
    )


def test_an_invocation_without_overrides_runs_as_its_function() -> None:
    function = deployed()
    assert effective(function, {}) is function


def test_schedule_overrides_change_only_what_they_name() -> None:
    schedule = ScheduleConfig.model_validate(
        {
            "expression": "rate(1 hour)",
            "function": "f",
            "retry": {"max_attempts": 1, "max_event_age": "10m"},
            "on_success": "function:audit",
        }
    )
    item = SOURCE.invocation("s", schedule, Settings(), SLOT)
    function = effective(deployed(), item.source)
    assert function.config.retry.max_attempts == 1
    assert function.config.retry.max_event_age_s == 600
    assert function.config.retry.backoff.initial_s == 5  # the function's own
    assert function.on_success is not None and function.on_success.function == "audit"
    assert function.on_failure is None


def test_invalid_overrides_are_ignored_not_fatal() -> None:
    function = deployed()
    assert effective(function, {"overrides": {"retry": {"max_attempts": 0}}}) is function
