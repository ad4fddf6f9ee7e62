from __future__ import annotations

import pytest

from broker.config.roles import ROLE_OF_POLLER, ROLES
from broker.config.settings import load_settings
from broker.errors import UsageError
from broker.loading import parse_config
from broker.sources.pollers import POLLERS, kinds_in


def test_every_process_has_every_role_unless_told(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("EVENTWIRE_ROLES", raising=False)
    assert load_settings().role_set == frozenset(ROLES)


def test_roles_are_a_comma_separated_list() -> None:
    settings = load_settings(roles=" pollers, scheduler,pollers ")
    assert settings.roles == "pollers,scheduler"
    assert settings.role_set == {"pollers", "scheduler"}


@pytest.mark.parametrize(
    ("value", "says"),
    [("pollers,dispach", "unknown role 'dispach'"), (" , ", "no role given")],
)
def test_a_bad_role_is_named_with_the_setting(value: str, says: str) -> None:
    with pytest.raises(UsageError) as error:
        load_settings(roles=value)
    message = str(error.value)
    assert message.startswith("setting roles (EVENTWIRE_ROLES or --roles): ")
    assert says in message
    assert "api, dispatch, pollers, scheduler" in message


def test_every_poller_kind_belongs_to_a_role() -> None:
    assert set(ROLE_OF_POLLER) == set(POLLERS)
    assert set(ROLE_OF_POLLER.values()) <= set(ROLES)


def test_the_lambda_api_is_an_api_poller_once_it_has_an_address(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("EVENTWIRE_API_LISTEN", raising=False)
    config = parse_config({"schedules": {}})
    assert kinds_in(config, load_settings(api_listen=None)) == []
    assert kinds_in(config, load_settings(api_listen="127.0.0.1:0")) == ["lambda_api"]
    assert ROLE_OF_POLLER["lambda_api"] == "api"
