"""Each invoker kind takes its own keys; a key that does not fit is named with its line."""

from __future__ import annotations

from pathlib import Path

import pytest

from broker.dispatch.dispatcher import response_limited
from broker.errors import ConfigError
from broker.loading import load_config
from broker.models import FunctionError, Success
from broker.store.pools import percentile


def error_of(tmp_path: Path, text: str) -> str:
    path = tmp_path / "eventwire.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    return str(caught.value).removeprefix(f"{path}:")


def test_process_and_http_functions_load_with_their_keys(tmp_path: Path) -> None:
    path = tmp_path / "eventwire.yaml"
    path.write_text(
        "functions:\n"
        "  resize:\n"
        "    invoker: process\n"
        "    command: [python, -m, myapp.bootstrap]\n"
        "    handler: myapp.images.resize\n"
        "    concurrency: 8\n"
        "    warm: 2\n"
        "    idle_timeout: 5m\n"
        "  webhook:\n"
        "    invoker: http\n"
        "    url: https://example.internal/hooks/order\n"
        "    headers: {Authorization: 'Bearer ${ORDER_TOKEN}'}\n"
        "limits: {response: 1MB}\n"
    )
    config = load_config(path)
    resize, webhook = config.functions["resize"], config.functions["webhook"]
    assert (resize.concurrency, resize.warm, resize.idle_timeout_s) == (8, 2, 300.0)
    assert webhook.headers == {"Authorization": "Bearer ${ORDER_TOKEN}"}  # expanded at start
    assert webhook.tls_verify is True
    assert config.limits.response_bytes == 1_000_000


@pytest.mark.parametrize(
    ("function", "expected"),
    [
        (
            "    invoker: process\n    handler: a.b\n    url: http://x\n",
            "5: functions.f.url: not used by the process invoker (only by: http)",
        ),
        (
            "    invoker: http\n    url: http://x\n    warm: 1\n",
            "5: functions.f.warm: not used by the http invoker (only by: process)",
        ),
        (
            "    handler: a:b\n    command: [x]\n",
            "4: functions.f.command: not used by the python invoker (only by: process)",
        ),
        (
            "    invoker: process\n    description: no code\n",
            '2: functions.f: a process function needs `command` (e.g. ["./bootstrap"]) '
            "or `handler` (run by the packaged Python bootstrap)",
        ),
        (
            "    invoker: process\n    command: []\n",
            '4: functions.f.command: expected a non-empty list like ["node", "runtime.js"]',
        ),
        (
            "    invoker: process\n    handler: a.b\n    concurrency: 2\n    warm: 3\n",
            "6: functions.f.warm: 3 warm processes exceed the pool's concurrency (2)",
        ),
        (
            "    invoker: http\n",
            "2: functions.f: an http function needs `url: http(s)://host/path`",
        ),
        (
            "    invoker: http\n    url: ftp://x/y\n",
            "4: functions.f.url: expected an http:// or https:// URL with a host, got 'ftp://x/y'",
        ),
    ],
)
def test_a_key_that_does_not_fit_the_invoker_is_named(
    tmp_path: Path, function: str, expected: str
) -> None:
    assert error_of(tmp_path, "functions:\n  f:\n" + function) == expected


def test_percentiles_are_nearest_rank() -> None:
    values = [float(n) for n in range(1, 101)]
    assert (percentile(values, 0.5), percentile(values, 0.99)) == (50.0, 99.0)
    assert percentile([3.0], 0.99) == 3.0 and percentile([], 0.5) is None


def test_a_response_over_the_limit_is_a_function_error() -> None:
    assert response_limited(Success(b"1234"), 4) == Success(b"1234")
    too_large = response_limited(Success(b"12345", log="printed"), 4)
    assert isinstance(too_large, FunctionError)
    assert too_large.error_type == "Function.ResponseSizeTooLarge"
    assert too_large.message == (
        "Response payload size (5 bytes) exceeded maximum allowed payload size (4 bytes)."
    )
    assert too_large.log == "printed"
