"""A boto3 Lambda client of an Eventwire Lambda API, as an SDK user would make one."""

from __future__ import annotations

from typing import Any

import boto3
from botocore.config import Config


def lambda_client(
    endpoint_url: str,
    key_id: str = "eventwire",
    secret: str = "eventwire",
    *,
    verify: str | bool | None = None,
) -> Any:
    """Signed with ``key_id`` and ``secret`` (made up by default: an API without keys does
    not check them); no retries, so a test sees each answer as the API gave it. ``verify``:
    the CA bundle to trust for HTTPS."""
    return boto3.client(
        "lambda",
        endpoint_url=endpoint_url,
        region_name="us-east-1",
        aws_access_key_id=key_id,
        aws_secret_access_key=secret,
        verify=verify,
        config=Config(retries={"max_attempts": 0}),
    )
