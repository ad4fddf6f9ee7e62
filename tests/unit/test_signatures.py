"""Signature Version 4, checked with botocore's signer: what SDKs sign passes, and each
way a request can be wrong is refused with AWS's error."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from urllib.parse import urlsplit

import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from broker.api.signatures import Arrived, SignatureError, verify

SECRETS = {"AKIAORDERS": b"orders-secret"}
NOW = datetime(2026, 12, 8, 12, 0, tzinfo=UTC)
URL = "http://127.0.0.1:9001/2015-03-31/functions/arn%3Aaws%3Alambda%3Aus-east-1%3A000000000000%3Afunction%3Aorders/invocations?Qualifier=%24LATEST"


def signed(
    body: bytes = b'{"order": 7}',
    *,
    key: str = "AKIAORDERS",
    secret: str = "orders-secret",
    at: datetime = NOW,
    service: str = "lambda",
    url: str = URL,
    extra: dict[str, str] | None = None,
) -> Arrived:
    """A request as botocore signs it, as the server sees it arrive."""
    request = AWSRequest(method="POST", url=url, data=body, headers=extra or {})
    signer = SigV4Auth(Credentials(key, secret), service, "eu-west-1")
    request.context["timestamp"] = at.strftime("%Y%m%dT%H%M%SZ")
    # add_auth takes the time from the clock: sign as it does, at ``at``.
    signer._modify_request_before_signing(request)
    canonical = signer.canonical_request(request)
    signer._inject_signature_to_request(
        request, signer.signature(signer.string_to_sign(request, canonical), request)
    )
    parts = urlsplit(url)
    headers = {name.lower(): value for name, value in request.headers.items()}
    headers["host"] = parts.netloc
    target = parts.path + (f"?{parts.query}" if parts.query else "")
    return Arrived("POST", parts.scheme, target, headers, body)


def refused(request: Arrived, now: datetime = NOW) -> SignatureError:
    with pytest.raises(SignatureError) as caught:
        verify(request, SECRETS, now)
    return caught.value


def test_a_request_signed_as_sdks_sign_it_names_its_key() -> None:
    assert verify(signed(), SECRETS, NOW) == "AKIAORDERS"
    assert verify(signed(), SECRETS, NOW + timedelta(minutes=4)) == "AKIAORDERS"


def test_a_wrong_secret_or_a_changed_request_does_not_match() -> None:
    assert refused(signed(secret="guessed")).code == "InvalidSignatureException"
    tampered = signed()
    tampered = Arrived(
        tampered.method, tampered.scheme, tampered.target, tampered.headers, b'{"order": 8}'
    )
    assert refused(tampered).code == "InvalidSignatureException"
    moved = signed()
    moved = Arrived(
        moved.method,
        moved.scheme,
        moved.target.replace("orders", "payments"),
        moved.headers,
        moved.body,
    )
    assert refused(moved).code == "InvalidSignatureException"


def test_an_unknown_key_is_an_unrecognized_client() -> None:
    error = refused(signed(key="AKIASOMEONE"))
    assert (error.status, error.code) == (403, "UnrecognizedClientException")


def test_a_request_five_minutes_off_the_clock_is_refused() -> None:
    late = refused(signed(), NOW + timedelta(minutes=6))
    assert late.code == "InvalidSignatureException" and "Signature expired" in str(late)
    early = refused(signed(at=NOW + timedelta(minutes=6)))
    assert "not yet current" in str(early)


def test_unsigned_malformed_and_misdirected_requests() -> None:
    bare = signed()
    unsigned = Arrived(
        bare.method,
        bare.scheme,
        bare.target,
        {k: v for k, v in bare.headers.items() if k != "authorization"},
        bare.body,
    )
    assert refused(unsigned).code == "MissingAuthenticationTokenException"
    garbled = Arrived(
        bare.method, bare.scheme, bare.target, {**bare.headers, "authorization": "AWS4 x"}, b""
    )
    assert (refused(garbled).status, refused(garbled).code) == (400, "IncompleteSignatureException")
    assert "service" in str(refused(signed(service="s3")))


def test_a_declared_body_hash_must_be_the_bodys_and_unsigned_bodies_need_https() -> None:
    lying = signed(extra={"X-Amz-Content-SHA256": "0" * 64})
    assert "x-amz-content-sha256" in str(refused(lying))
    plain = signed(extra={"X-Amz-Content-SHA256": "UNSIGNED-PAYLOAD"})
    assert "HTTPS" in str(refused(plain))
    secure = signed(
        extra={"X-Amz-Content-SHA256": "UNSIGNED-PAYLOAD"}, url=URL.replace("http:", "https:")
    )
    assert verify(secure, SECRETS, NOW) == "AKIAORDERS"
