"""Schedules in ``eventwire.yaml``: bad input is rejected at load, naming the line and the text."""

from __future__ import annotations

from pathlib import Path

import pytest

from broker.errors import ConfigError
from broker.loading import load_config

HEAD = """functions:
  build_report:
    handler: app.reports:build
schedules:
  nightly-report:
"""


def error_of(tmp_path: Path, body: str) -> str:
    path = tmp_path / "eventwire.yaml"
    path.write_text(HEAD + body)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    message = str(caught.value)
    assert "\n" not in message
    return message.removeprefix(str(path))


def test_a_full_schedule_loads(tmp_path: Path) -> None:
    path = tmp_path / "eventwire.yaml"
    path.write_text(
        HEAD
        + """    expression: cron(0 5 * * ? *)
    timezone: Europe/Berlin
    function: build_report
    payload: {"kind": "daily"}
    flexible_window: 15m
    catch_up: latest
    catch_up_window: 6h
    overlap: skip
    retry: {max_attempts: 3, max_event_age: 1h}
    on_failure: dlq
  heartbeat:
    expression: rate(5 minutes)
    function: build_report
  launch:
    expression: at(2026-12-01T09:00:00)
    timezone: America/New_York
    function: build_report
    after_completion: delete
"""
    )
    config = load_config(path)
    nightly = config.schedules["nightly-report"]
    assert nightly.flexible_window_s == 900
    assert nightly.catch_up_window_s == 6 * 3600
    assert nightly.retry is not None and nightly.retry.max_event_age_s == 3600
    assert config.schedules["heartbeat"].timezone == "UTC"
    assert config.schedules["launch"].after_completion == "delete"


@pytest.mark.parametrize(
    ("expression", "reason"),
    [
        ("cron(0 5 * * * *)", "one of Day-of-month and Day-of-week must be '?'"),
        ("rate(0 minutes)", "the value must be a whole number of 1 or more, got 0"),
        ("rate(5 fortnights)", "unknown unit 'fortnights'; expected minutes, hours or days"),
        ("at(2026-02-30T00:00:00)", "with a real date and time (day is out of range for month)"),
    ],
)
def test_an_invalid_expression_is_rejected_with_its_reason_and_text(
    tmp_path: Path, expression: str, reason: str
) -> None:
    message = error_of(tmp_path, f"    expression: {expression}\n    function: build_report\n")
    assert message.startswith(f":6: schedules.nightly-report.expression: {expression}: ")
    assert reason in message


def test_an_unknown_time_zone_is_rejected(tmp_path: Path) -> None:
    message = error_of(
        tmp_path,
        "    expression: cron(0 5 * * ? *)\n"
        "    timezone: Europe/Berln\n"
        "    function: build_report\n",
    )
    assert message == (
        ":7: schedules.nightly-report.timezone: unknown time zone 'Europe/Berln'; "
        "expected an IANA name like UTC, Europe/Berlin or America/New_York"
    )


def test_a_schedule_of_an_unknown_function_names_both(tmp_path: Path) -> None:
    message = error_of(tmp_path, "    expression: rate(1 hour)\n    function: build_reprot\n")
    assert message == (
        ":7: schedules.nightly-report.function: schedule 'nightly-report' invokes unknown "
        "function 'build_reprot'; configured functions: build_report"
    )


def test_an_unknown_catch_up_mode_is_named(tmp_path: Path) -> None:
    message = error_of(
        tmp_path, "    expression: rate(1 hour)\n    function: build_report\n    catch_up: most\n"
    )
    assert message.startswith(":8: schedules.nightly-report.catch_up: ")
    assert "'none', 'latest' or 'all'" in message


def test_a_typo_in_a_schedule_key_lists_the_keys(tmp_path: Path) -> None:
    message = error_of(
        tmp_path,
        "    expression: rate(1 hour)\n    function: build_report\n    overlaps: skip\n",
    )
    assert message.startswith(":8: schedules.nightly-report.overlaps: unknown key")
    assert "expression" in message and "overlap," in message


def test_a_schedule_without_expression_says_so(tmp_path: Path) -> None:
    message = error_of(tmp_path, "    function: build_report\n")
    assert message == ":5: schedules.nightly-report.expression: required key is missing"


def test_a_destination_override_must_name_a_function(tmp_path: Path) -> None:
    message = error_of(
        tmp_path,
        "    expression: rate(1 hour)\n    function: build_report\n    on_failure: function:nope\n",
    )
    assert message.startswith(
        ":8: schedules.nightly-report.on_failure: unknown function 'nope' in destination"
    )
