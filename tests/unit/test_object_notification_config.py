"""``object_notifications:`` in eventwire.yaml: what loads, and mistakes named by file:line: key."""

from __future__ import annotations

from pathlib import Path

import pytest

from broker.config.settings import Settings
from broker.errors import ConfigError
from broker.loading import load_config
from broker.sources.pollers import kinds_in

HEAD = """functions:
  thumbs: {handler: "m:thumbs"}
object_notifications:
"""


def load(tmp_path: Path, body: str) -> object:
    path = tmp_path / "eventwire.yaml"
    path.write_text(HEAD + body)
    return load_config(path)


def test_the_issue_example_loads(tmp_path: Path) -> None:
    config = load(
        tmp_path,
        """  - name: uploads
    source: webhook
    token_env: UPLOADS_WEBHOOK_TOKEN
    events: ["s3:ObjectCreated:*"]
    prefix: incoming/
    suffix: .jpg
    function: thumbs
  - name: dropbox
    source: dir:///srv/dropbox
    function: thumbs
    settle: 500ms
""",
    )
    uploads, dropbox = config.object_notifications  # type: ignore[attr-defined]
    assert uploads.is_webhook and uploads.filter.prefix == "incoming/"
    assert dropbox.directory == "/srv/dropbox" and dropbox.settle_s == 0.5
    assert dropbox.events == ("s3:ObjectCreated:*", "s3:ObjectRemoved:*")
    assert dropbox.bucket_name == "dropbox"
    no_api = Settings(api_listen=None)
    assert kinds_in(config, no_api) == ["s3_webhook", "s3_dir"]  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (
            "  - {name: a, source: webhook, function: thumbs}\n",
            "eventwire.yaml:4: object_notifications.0.token_env: a webhook needs `token_env",
        ),
        (
            "  - {name: a, source: dir://srv/x, function: thumbs}\n",
            "object_notifications.0.source: expected `webhook` or `dir:///absolute/path`",
        ),
        (
            "  - {name: a, source: 'dir:///x', function: nope}\n",
            "object_notifications.0.function: unknown function 'nope'; configured functions: "
            "thumbs",
        ),
        (
            "  - {name: a, source: 'dir:///x', function: thumbs, events: [s3:Created]}\n"
            "  - {name: b, source: 'dir:///x', function: thumbs}\n",
            "object_notifications.0.events",
        ),
        (
            "  - {name: a, source: 'dir:///x', function: thumbs, events: ['s3:Object Created']}\n",
            "not an S3 event type: 's3:Object Created'",
        ),
        (
            "  - {name: a, source: 'dir:///x', function: thumbs}\n"
            "  - {name: a, source: 'dir:///y', function: thumbs}\n",
            "eventwire.yaml:5: object_notifications.1.name: name 'a' is already used",
        ),
        (
            "  - {name: a, source: 'dir:///x', function: thumbs, token_env: T}\n",
            "object_notifications.0.token_env: a dir:// source takes no token",
        ),
        (
            "  - {name: a, source: webhook, token_env: T, function: thumbs, settle: 2s}\n",
            "object_notifications.0.settle: `settle` applies to dir:// sources only",
        ),
        (
            "  - {name: a, source: webhook, token_env: T, function: thumbs, prefx: a/}\n",
            "object_notifications.0.prefx: unknown key 'prefx'; expected one of: bucket, events, "
            "function, name, prefix, settle, source, suffix, token_env",
        ),
    ],
)
def test_mistakes_name_the_place(tmp_path: Path, body: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, body)
    assert message in str(caught.value)
    assert str(caught.value).startswith(str(tmp_path / "eventwire.yaml") + ":")
