"""Hostile configuration files: whatever ``eventwire.yaml`` holds, loading it either gives
a configuration or a :class:`ConfigError` that names the file (and, where the key has a
line, the line and the key), never another exception or a traceback.

Documents are built from the keys Eventwire knows, with values of every JSON/YAML type
(and plausible ones: durations, sizes, URIs), nested as a file would nest them, plus
raw text that is not YAML at all.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from broker.errors import ConfigError
from broker.loading import load_config

KEYS = (
    "functions", "schedules", "mappings", "destinations", "object_notifications", "limits",
    "api", "metrics", "tracing", "handler", "invoker", "timeout", "memory", "retry",
    "max_attempts", "backoff", "initial", "on_success", "on_failure", "dead_letter",
    "reserved_concurrency", "concurrency", "warm", "environment", "command", "url",
    "expression", "function", "payload", "source", "batch_size", "batch_window", "filters",
    "starting_position", "max_retry_attempts", "keys", "id", "secret_env", "secret_file",
    "allow", "actions", "tls", "cert", "key", "listen", "endpoint", "sample_ratio",
    "token_env", "events", "name", "value", "numeric", "prefix", "async_payload",
)  # fmt: skip
PLAUSIBLE = st.sampled_from(
    [
        "30s", "5m", "-1", "1GB", "128MB", "0", "tests.handlers:echo", "rate(1 minute)",
        "cron(0 12 * * ? *)", "kafka://localhost:9092/t", "sqs://h/123456789012/q",
        "function:f", "dlq", "http://127.0.0.1:1/x", "../../etc/passwd", "a\x00b", "f\nb",
        "lambda:*", "0.0.0.0:9464", "${HOME}", "💥", "",
    ]
)  # fmt: skip
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=40),
    PLAUSIBLE,
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.one_of(st.sampled_from(KEYS), st.text(max_size=12)), inner, max_size=5),
    ),
    max_leaves=30,
)
FUNCTION = st.dictionaries(st.sampled_from(KEYS), VALUES, max_size=6)
DOCUMENTS = st.fixed_dictionaries(
    {},
    optional={
        "functions": st.dictionaries(
            st.one_of(st.sampled_from(["f", "g"]), st.text(max_size=70)), FUNCTION, max_size=3
        ),
        "schedules": st.dictionaries(st.text(max_size=10), FUNCTION, max_size=2),
        "mappings": st.lists(FUNCTION, max_size=2),
        "object_notifications": st.lists(FUNCTION, max_size=2),
        "api": FUNCTION,
        "limits": FUNCTION,
        "metrics": VALUES,
        "tracing": VALUES,
        "destinations": VALUES,
    },
)
NAMED = re.compile(r"^(?P<file>[^:]+eventwire\.yaml)(:\d+)?: ")


def loads_or_names_the_file(path: Path) -> None:
    try:
        load_config(path)
    except ConfigError as exc:
        message = str(exc)
        assert NAMED.match(message), message
        assert "Traceback" not in message


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(document=DOCUMENTS)
def test_any_document_loads_or_is_a_config_error_naming_the_file(
    tmp_path_factory: Any, document: dict[str, Any]
) -> None:
    path = tmp_path_factory.mktemp("fuzz") / "eventwire.yaml"
    path.write_text(yaml.safe_dump(document, allow_unicode=True))
    loads_or_names_the_file(path)


@settings(max_examples=200, deadline=None)
@given(text=st.text(max_size=300))
def test_any_text_loads_or_is_a_config_error_naming_the_file(
    tmp_path_factory: Any, text: str
) -> None:
    path = tmp_path_factory.mktemp("fuzz") / "eventwire.yaml"
    path.write_text(text, errors="surrogatepass")
    loads_or_names_the_file(path)
