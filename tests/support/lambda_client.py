"""A boto3 Lambda client of an Eventwire Lambda API, as an SDK user would make one."""

from __future__ import annotations

from typing import Any

import boto3
from botocore.config import Config


def lambda_client(endpoint_url: str) -> Any:
    """Signed with made-up keys (the API does not check them); no retries, so a test sees
    each answer as the API gave it."""
    return boto3.client(
        "lambda",
        endpoint_url=endpoint_url,
        region_name="us-east-1",
        aws_access_key_id="eventwire",
        aws_secret_access_key="eventwire",
        config=Config(retries={"max_attempts": 0}),
    )
