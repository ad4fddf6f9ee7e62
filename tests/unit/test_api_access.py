"""The ``api`` section: keys with their secrets from the environment or files, what their
statements allow, and where an open API may listen."""

from __future__ import annotations

from pathlib import Path

import pytest

from broker.api.access import check_exposure, is_loopback, load_access
from broker.config.api import ApiConfig
from broker.errors import ConfigError, UsageError
from broker.loading import load_config


def api_of(tmp_path: Path, text: str) -> ApiConfig:
    path = tmp_path / "eventwire.yaml"
    path.write_text(text)
    return load_config(path).api


def error_of(tmp_path: Path, text: str) -> str:
    with pytest.raises(ConfigError) as caught:
        api_of(tmp_path, text)
    return str(caught.value)


KEYS = """
api:
  keys:
    - id: AKIAWRITER
      secret_env: WRITER_SECRET
      allow:
        - actions: [lambda:InvokeFunction]
          functions: [a, orders-*]
    - id: AKIAREADER
      secret_file: {secret}
      allow:
        - actions: ["lambda:Get*", lambda:ListFunctions]
"""


def test_statements_allow_actions_on_functions_and_deny_the_rest(tmp_path: Path) -> None:
    (tmp_path / "reader").write_text("reader-secret\n")
    api = api_of(tmp_path, KEYS.format(secret=tmp_path / "reader"))
    access = load_access(api, {"WRITER_SECRET": "writer-secret"})
    assert access.secrets == {"AKIAWRITER": b"writer-secret", "AKIAREADER": b"reader-secret"}
    arn = "arn:aws:lambda:local:000000000000:function:b"
    access.authorize("AKIAWRITER", "lambda:InvokeFunction", "a", arn)
    access.authorize("AKIAWRITER", "lambda:InvokeFunction", "orders-eu", arn)
    access.authorize("AKIAREADER", "lambda:GetFunction", "b", arn)
    access.authorize("AKIAREADER", "lambda:ListFunctions", None, "*")
    for key, action, function in [
        ("AKIAWRITER", "lambda:InvokeFunction", "b"),
        ("AKIAWRITER", "lambda:GetFunction", "a"),
        ("AKIAREADER", "lambda:InvokeFunction", "b"),
        ("AKIANOBODY", "lambda:GetFunction", "b"),
    ]:
        with pytest.raises(Exception, match=f"not authorized to perform: {action}"):
            access.authorize(key, action, function, arn)


def test_a_secret_that_cannot_be_had_names_its_key(tmp_path: Path) -> None:
    api = api_of(tmp_path, KEYS.format(secret=tmp_path / "missing"))
    with pytest.raises(UsageError, match="AKIAWRITER: WRITER_SECRET"):
        load_access(api, {})
    with pytest.raises(UsageError, match="AKIAREADER: cannot read its secret_file"):
        load_access(api, {"WRITER_SECRET": "w"})


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("api: {keys: [{id: AKIAX, secret: hunter2}]}", "api.keys.0.secret: unknown key"),
        ("api: {keys: [{id: AKIAX}]}", "secret_env: VARIABLE"),
        ("api: {keys: [{id: AKIAX, secret_env: A, secret_file: /f}]}", "one of them"),
        ("api: {keys: [{id: AKIAX, secret_env: A, allow: [{actions: [lambda:Invoke]}]}]}",
         "'lambda:Invoke' names no action"),
        ("api: {keys: [{id: AKIAX, secret_env: A}, {id: AKIAX, secret_env: B}]}", "twice"),
        ("api: {keys: [{id: 'a b', secret_env: A}]}", "access key id"),
    ],
)  # fmt: skip
def test_a_wrong_api_section_says_what_was_expected(tmp_path: Path, text: str, says: str) -> None:
    assert says in error_of(tmp_path, text + "\n")


def test_an_open_api_listens_only_on_loopback_unless_allowed() -> None:
    assert is_loopback("127.0.0.1:9001") and is_loopback("[::1]:9001")
    assert is_loopback("localhost:9001")
    assert not is_loopback("0.0.0.0:9001") and not is_loopback(":9001")
    assert not is_loopback("10.0.0.5:9001") and not is_loopback("api.internal:9001")
    open_api = load_access(ApiConfig(), {})
    check_exposure("127.0.0.1:0", open_api, allow_unauthenticated=False)
    check_exposure("0.0.0.0:0", open_api, allow_unauthenticated=True)
    with pytest.raises(UsageError, match="--allow-unauthenticated"):
        check_exposure("0.0.0.0:9001", open_api, allow_unauthenticated=False)


def test_a_keys_rate_limit_is_a_token_bucket(tmp_path: Path) -> None:
    from broker.api.access import RateExceeded

    api = api_of(
        tmp_path,
        "api:\n  keys:\n"
        "    - {id: AKIAFAST, secret_env: S, rate_limit: {per_second: 2, burst: 3}}\n"
        "    - {id: AKIAFREE, secret_env: S}\n",
    )
    access = load_access(api, {"S": "s"})
    for _ in range(3):
        access.admit("AKIAFAST", now=100.0)  # the burst
    with pytest.raises(RateExceeded) as caught:
        access.admit("AKIAFAST", now=100.0)
    assert caught.value.retry_after_s == pytest.approx(0.5)
    access.admit("AKIAFAST", now=100.5)  # half a second refills one at 2/s
    for _ in range(100):
        access.admit("AKIAFREE", now=100.0)  # no limit
    assert "per_second" in error_of(
        tmp_path, "api: {keys: [{id: AKIAX, secret_env: A, rate_limit: {per_second: 0}}]}\n"
    )


def test_public_function_urls_are_deliberate_and_named_in_the_log(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with_keys = load_access(ApiConfig.model_validate(ONE_KEY), {"K": "secret"})
    check_exposure("0.0.0.0:9001", with_keys, allow_unauthenticated=False, public=["site"])
    assert "function URLs with auth NONE are public on 0.0.0.0:9001: site" in caplog.text
    caplog.clear()
    check_exposure("127.0.0.1:9001", with_keys, allow_unauthenticated=False, public=["site"])
    assert not caplog.text
    # A public URL does not open the rest of an API without keys.
    with pytest.raises(UsageError, match=r"no api\.keys"):
        check_exposure("0.0.0.0:9001", load_access(ApiConfig(), {}), False, public=["site"])


ONE_KEY = {"keys": [{"id": "AKIAKEY1", "secret_env": "K", "allow": [{"actions": ["lambda:*"]}]}]}
