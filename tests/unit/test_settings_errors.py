"""A bad setting is one line naming where it came from and what was expected."""

from __future__ import annotations

import pytest

from broker.config.settings import load_settings
from broker.errors import UsageError


def test_a_setting_without_a_flag_names_only_its_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EVENTWIRE_API_LISTEN", "nowhere")
    with pytest.raises(UsageError) as error:
        load_settings(roles=None)
    assert str(error.value) == (
        "setting api_listen (EVENTWIRE_API_LISTEN): expected host:port (an IPv6 host in "
        "brackets; port 0: any free one), got 'nowhere'"
    )


@pytest.mark.parametrize("listen", ["127.0.0.1:0", "[::1]:9001", ":9001", "api.internal:80"])
def test_listen_addresses_are_host_and_port(monkeypatch: pytest.MonkeyPatch, listen: str) -> None:
    monkeypatch.setenv("EVENTWIRE_API_LISTEN", listen)
    monkeypatch.setenv("EVENTWIRE_HTTP_LISTEN", listen)
    settings = load_settings()
    assert (settings.api_listen, settings.http_listen) == (listen, listen)


def test_the_lambda_api_is_off_unless_asked_for(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("EVENTWIRE_API_LISTEN", raising=False)
    assert load_settings().api_listen is None
