"""Configuration errors name the file, line and key, and say what was expected."""

from __future__ import annotations

from pathlib import Path

import pytest

from broker.config.durations import format_duration, parse_duration, parse_size
from broker.errors import ConfigError
from broker.loading import load_config, parse_config


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "eventwire.yaml"
    path.write_text(text)
    return path


def error_of(tmp_path: Path, text: str) -> str:
    with pytest.raises(ConfigError) as caught:
        load_config(write(tmp_path, text))
    return str(caught.value)


def test_a_valid_file_has_lambda_defaults(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, "functions:\n  f: {handler: 'm:f', timeout: 30s}\n"))
    f = config.functions["f"]
    assert f.timeout_s == 30
    assert f.retry.max_attempts == 3
    assert f.retry.max_event_age_s == 6 * 3600
    assert config.limits.async_payload_bytes == 256 * 1024


def test_a_typo_is_an_error_with_its_line(tmp_path: Path) -> None:
    message = error_of(
        tmp_path,
        "functions:\n  flaky:\n    handler: m:f\n    retry:\n      max_atempts: 3\n",
    )
    assert message == (
        f"{tmp_path / 'eventwire.yaml'}:5: functions.flaky.retry.max_atempts: unknown key "
        "'max_atempts'; expected one of: backoff, max_attempts, max_event_age"
    )


def test_malformed_yaml_names_the_line(tmp_path: Path) -> None:
    message = error_of(tmp_path, "functions:\n  f: {handler: [\n")
    assert message.startswith(f"{tmp_path / 'eventwire.yaml'}:")
    assert "not valid YAML" in message


@pytest.mark.parametrize("value", ["5 fortnights", "-3s", "s", "10"])
def test_bad_durations_are_named(tmp_path: Path, value: str) -> None:
    if value == "10":
        assert load_config(write(tmp_path, "functions:\n  f: {handler: m:f, timeout: 10}\n"))
        return
    message = error_of(tmp_path, f"functions:\n  f:\n    handler: m:f\n    timeout: '{value}'\n")
    assert ":4: functions.f.timeout: expected a duration like 30s, 5m or 6h" in message


def test_unknown_function_in_a_destination(tmp_path: Path) -> None:
    message = error_of(
        tmp_path, "functions:\n  f:\n    handler: m:f\n    on_failure: function:nope\n"
    )
    assert ":4: functions.f.on_failure: unknown function 'nope'" in message


def test_unknown_destination_scheme(tmp_path: Path) -> None:
    message = error_of(tmp_path, "functions:\n  f: {handler: m:f, on_success: 'nats://q'}\n")
    assert "functions.f.on_success: unknown destination 'nats://q'" in message
    assert "sqs://…, sns://…" in message


def test_missing_file_and_python_without_handler(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such configuration file"):
        load_config(tmp_path / "missing.yaml")
    assert "needs `handler:" in error_of(tmp_path, "functions:\n  f: {timeout: 3s}\n")


def test_unknown_top_level_key() -> None:
    expected = "unknown key 'functoins'; expected one of: api, destinations, functions"
    with pytest.raises(ConfigError, match=expected):
        parse_config({"functoins": {}})


def test_durations_and_sizes() -> None:
    assert parse_duration("30s") == 30
    assert parse_duration("5m") == 300
    assert parse_duration("6h") == 21600
    assert parse_duration("1h30m") == 5400
    assert parse_duration("500ms") == 0.5
    assert parse_size("256KiB") == 262144
    assert parse_size("6MB") == 6_000_000
    assert format_duration(5400) == "1h30m"
    assert format_duration(0.25) == "250ms"
    with pytest.raises(ValueError, match="expected a size"):
        parse_size("lots")


def test_the_tracing_and_metrics_sections(tmp_path: Path) -> None:
    config = load_config(
        write(
            tmp_path,
            "tracing: {endpoint: 'http://collector:4318', sample_ratio: 0.25, "
            "headers_env: OTEL_AUTH}\nmetrics: {listen: '0.0.0.0:9464'}\n",
        )
    )
    assert config.metrics.listen == "0.0.0.0:9464"
    assert config.tracing is not None
    assert config.tracing.environment({"OTEL_AUTH": "x-token=s3cret"}) == {
        "OTEL_TRACES_EXPORTER": "otlp",
        "OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318",
        "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
        "OTEL_TRACES_SAMPLER_ARG": "0.25",
        "OTEL_EXPORTER_OTLP_HEADERS": "x-token=s3cret",
    }
    assert "tracing.exporter" in error_of(tmp_path, "tracing: {exporter: zipkin}\n")
    assert "tracing.sample_ratio" in error_of(tmp_path, "tracing: {sample_ratio: 2}\n")
    assert "metrics.listen" in error_of(tmp_path, "metrics: {listen: 9464}\n")


def test_memory_is_within_lambdas_range(tmp_path: Path) -> None:
    assert "less than or equal to 10240" in error_of(
        tmp_path, "functions:\n  f: {handler: 'm:f', memory: 1180591620717411303424}\n"
    )
    assert "greater than or equal to 128" in error_of(
        tmp_path, "functions:\n  f: {handler: 'm:f', memory: 64MB}\n"
    )
