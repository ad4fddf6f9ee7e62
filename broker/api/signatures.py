"""Checking AWS Signature Version 4 on a request, with botocore's own signer.

The expected signature is computed by botocore's :class:`~botocore.auth.SigV4Auth` from
the request as it arrived (method, path and query as sent, the headers it says it
signed, the body) and the secret of the key it names, then compared in constant time:
the canonical form is botocore's, the one every AWS SDK and the AWS CLI sign with, not
a second hand-written one. A request more than five minutes off this server's clock is
refused, as AWS refuses it.

Errors are AWS's, as a Lambda client expects them: ``MissingAuthenticationTokenException``,
``IncompleteSignatureException``, ``UnrecognizedClientException`` and
``InvalidSignatureException``.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from broker.errors import UsageError

try:
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials
except ImportError:  # pragma: no cover - depends on the installed extras
    raise UsageError(
        "the Lambda API (EVENTWIRE_API_LISTEN) needs botocore: pip install 'eventwire[http]'"
    ) from None

SERVICE = "lambda"
MAX_SKEW = timedelta(minutes=5)
ALGORITHM = "AWS4-HMAC-SHA256"
UNSIGNED_PAYLOAD = "UNSIGNED-PAYLOAD"

_AUTHORIZATION = re.compile(
    r"^AWS4-HMAC-SHA256\s+Credential=(?P<credential>[^,\s]+)\s*,\s*"
    r"SignedHeaders=(?P<signed>[^,\s]+)\s*,\s*Signature=(?P<signature>[0-9a-f]{64})\s*$"
)
_STAMP = "%Y%m%dT%H%M%SZ"


class SignatureError(Exception):
    """The request is not signed as it must be: answer ``status`` with AWS's ``code``."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code


@dataclass(frozen=True, slots=True)
class Arrived:
    """A request as it arrived: ``target`` is its path and query exactly as sent."""

    method: str
    scheme: str
    target: str
    headers: Mapping[str, str]
    """Names in lower case; a repeated header's values joined with commas."""
    body: bytes


def verify(request: Arrived, secrets: Mapping[str, bytes], now: datetime) -> str:
    """The id of the key that signed ``request`` (one of ``secrets``, id → secret), or
    :class:`SignatureError` saying why not."""
    authorization = request.headers.get("authorization")
    if not authorization:
        raise SignatureError(
            403, "MissingAuthenticationTokenException", "Missing Authentication Token"
        )
    match = _AUTHORIZATION.match(authorization)
    if match is None:
        raise SignatureError(
            400,
            "IncompleteSignatureException",
            "Authorization header requires 'Credential', 'SignedHeaders' and 'Signature', "
            f"signed with {ALGORITHM}",
        )
    parts = match.group("credential").split("/")
    if len(parts) != 5 or parts[4] != "aws4_request":
        raise SignatureError(
            400,
            "IncompleteSignatureException",
            "Credential must be KEY_ID/DATE/REGION/SERVICE/aws4_request",
        )
    key_id, date, region, service, _ = parts
    secret = secrets.get(key_id)
    if secret is None:
        raise SignatureError(
            403,
            "UnrecognizedClientException",
            "The security token included in the request is invalid.",
        )
    if service != SERVICE:
        raise SignatureError(
            403,
            "InvalidSignatureException",
            f"Credential should be scoped to correct service: '{SERVICE}'.",
        )
    stamp = _timestamp(request.headers, now)
    if date != stamp[:8]:
        raise SignatureError(
            403,
            "InvalidSignatureException",
            f"Credential should be scoped to a valid date: '{stamp[:8]}'.",
        )
    signed = match.group("signed").split(";")
    if "host" not in signed:
        raise SignatureError(403, "InvalidSignatureException", "'Host' must be a signed header.")
    _check_payload(request)
    expected = _signature(request, signed, key_id, secret, region, stamp)
    if not hmac.compare_digest(expected.encode(), match.group("signature").encode()):
        raise SignatureError(
            403,
            "InvalidSignatureException",
            "The request signature we calculated does not match the signature you "
            "provided. Check your AWS Secret Access Key and signing method.",
        )
    return key_id


def _timestamp(headers: Mapping[str, str], now: datetime) -> str:
    stamp = headers.get("x-amz-date", "")
    try:
        moment = datetime.strptime(stamp, _STAMP).replace(tzinfo=UTC)
    except ValueError:
        raise SignatureError(
            400,
            "IncompleteSignatureException",
            "X-Amz-Date is missing or not a time like 20260131T120000Z",
        ) from None
    if abs(now - moment) > MAX_SKEW:
        raise SignatureError(
            403,
            "InvalidSignatureException",
            f"Signature expired: {stamp} is now earlier than "
            f"{(now - MAX_SKEW).strftime(_STAMP)} ({now.strftime(_STAMP)} - 5 min.)"
            if moment < now
            else f"Signature not yet current: {stamp} is still later than "
            f"{(now + MAX_SKEW).strftime(_STAMP)} ({now.strftime(_STAMP)} + 5 min.)",
        )
    return stamp


def _check_payload(request: Arrived) -> None:
    """A body hash the client declares must be the body's; an unsigned body only over TLS."""
    declared = request.headers.get("x-amz-content-sha256")
    if declared is None:
        return
    if declared == UNSIGNED_PAYLOAD:
        if request.scheme != "https":
            raise SignatureError(
                403, "InvalidSignatureException", "UNSIGNED-PAYLOAD is accepted only over HTTPS"
            )
        return
    if not hmac.compare_digest(declared, hashlib.sha256(request.body).hexdigest()):
        raise SignatureError(
            403,
            "InvalidSignatureException",
            "The provided 'x-amz-content-sha256' header does not match what was computed.",
        )


def _signature(
    request: Arrived, signed: list[str], key_id: str, secret: bytes, region: str, stamp: str
) -> str:
    host = request.headers.get("host", "")
    headers = {name: request.headers.get(name, "") for name in signed}
    aws = AWSRequest(
        method=request.method,
        url=f"{request.scheme}://{host}{request.target}",
        headers=headers,
        data=request.body,
    )
    aws.context["timestamp"] = stamp
    signer = SigV4Auth(Credentials(key_id, secret.decode()), SERVICE, region)
    canonical = signer.canonical_request(aws)
    signature: str = signer.signature(signer.string_to_sign(aws, canonical), aws)
    return signature
