"""A webhook's token rotated without downtime: while ``token_env`` lists the old and the
new variable, senders with either token are let in, and nobody else."""

from __future__ import annotations

from pathlib import Path

import aiohttp
import pytest

from broker.errors import UsageError
from pollers.s3.webhook import WebhookServer
from tests.s3_samples import MINIO_WEBHOOK_PUT
from tests.support.service import running_service
from tests.support.stores import store_for

FUNCTIONS = {"noop": {"handler": "tests.handlers:noop"}}
NOTIFICATIONS = [
    {
        "name": "uploads",
        "source": "webhook",
        "token_env": ["UPLOADS_TOKEN", "UPLOADS_TOKEN_NEXT"],
        "function": "noop",
    }
]


async def test_either_token_of_a_rotation_is_let_in(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("UPLOADS_TOKEN", "old-token")
    monkeypatch.setenv("UPLOADS_TOKEN_NEXT", "new-token")
    config = {"object_notifications": NOTIFICATIONS}
    async with (
        store_for("sqlite", tmp_path) as where,
        running_service(where, FUNCTIONS, config=config, http_listen="127.0.0.1:0") as service,
        aiohttp.ClientSession() as http,
    ):
        [server] = [p for p in service.pollers if isinstance(p, WebhookServer)]
        url = f"{server.url}/notifications/uploads"
        statuses = {}
        for token in ("old-token", "new-token", "guessed", ""):
            headers = {"Authorization": f"Bearer {token}"}
            async with http.post(url, data=MINIO_WEBHOOK_PUT, headers=headers) as response:
                statuses[token] = response.status
    assert statuses == {"old-token": 200, "new-token": 200, "guessed": 401, "": 401}


async def test_every_variable_of_the_list_must_be_set(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("UPLOADS_TOKEN", "old-token")
    monkeypatch.delenv("UPLOADS_TOKEN_NEXT", raising=False)
    config = {"object_notifications": NOTIFICATIONS}
    with pytest.raises(UsageError, match="UPLOADS_TOKEN_NEXT \\(its token_env\\) is not set"):
        async with (
            store_for("sqlite", tmp_path) as where,
            running_service(where, FUNCTIONS, config=config, http_listen="127.0.0.1:0"),
        ):
            pass
