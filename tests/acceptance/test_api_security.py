"""``serve`` with the API secured from ``eventwire.yaml``: HTTPS with its certificate and
keys whose secrets come from the environment, and no open API beyond loopback unless
told so."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from botocore.exceptions import SSLError

from tests.support.lambda_client import lambda_client
from tests.support.processes import Serve, clean_env, eventwire
from tests.support.services import free_port

API_URL = r"Lambda API: listening on (https?://\S+)/2015-03-31/"
CONFIG = """
functions:
  a: {handler: tests.handlers:echo}
api:
  keys:
    - id: AKIAINVOKESA
      secret_env: A_SECRET
      allow: [{actions: [lambda:InvokeFunction], functions: [a]}]
  tls: {cert: %s, key: %s}
"""


def test_serve_answers_signed_calls_over_https(tmp_path: Path) -> None:
    import trustme

    ca = trustme.CA()
    certificate = ca.issue_cert("127.0.0.1", "localhost")
    cert, key, bundle = tmp_path / "api.pem", tmp_path / "api.key", tmp_path / "ca.pem"
    certificate.private_key_pem.write_to_path(str(key))
    certificate.cert_chain_pems[0].write_to_path(str(cert))
    ca.cert_pem.write_to_path(str(bundle))
    config = tmp_path / "eventwire.yaml"
    config.write_text(CONFIG % (cert, key))
    env = clean_env(
        EVENTWIRE_DATABASE_URL=f"sqlite+aiosqlite:///{tmp_path / 'ew.db'}",
        EVENTWIRE_API_LISTEN="127.0.0.1:0",
        A_SECRET="secret-of-a",
    )
    serve = Serve(config, env, tmp_path / "serve.log")
    try:
        serve.wait_serving()
        url = serve.logged(API_URL, "the API's address")
        assert url.startswith("https://")
        trusting = lambda_client(url, "AKIAINVOKESA", "secret-of-a", verify=str(bundle))
        answer = trusting.invoke(FunctionName="a", Payload=b'{"tls": true}')
        assert json.loads(answer["Payload"].read()) == {"tls": True}
        doubting = lambda_client(url, "AKIAINVOKESA", "secret-of-a", verify=True)
        with pytest.raises(SSLError):
            doubting.invoke(FunctionName="a", Payload=b"{}")
    finally:
        assert serve.stop() == 0, serve.log()


def test_an_open_api_beyond_loopback_needs_to_be_allowed(tmp_path: Path) -> None:
    config = tmp_path / "eventwire.yaml"
    config.write_text("functions:\n  a: {handler: tests.handlers:echo}\n")
    env = clean_env(
        EVENTWIRE_DATABASE_URL=f"sqlite+aiosqlite:///{tmp_path / 'ew.db'}",
        EVENTWIRE_API_LISTEN=f"0.0.0.0:{free_port()}",
    )
    refused = eventwire("serve", "-c", str(config), env=env)
    assert refused.returncode == 2, refused.stderr
    [line] = refused.stderr.strip().splitlines()
    assert "no api.keys" in line and "--allow-unauthenticated" in line, line
    allowed = Serve(config, env, tmp_path / "serve.log", "--allow-unauthenticated")
    try:
        allowed.wait_serving()
    finally:
        assert allowed.stop() == 0, allowed.log()
