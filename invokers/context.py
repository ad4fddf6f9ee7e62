"""The context object handlers receive as their second argument, shaped like Lambda's.

A handler written for AWS Lambda reads ``context.aws_request_id``,
``context.function_name``, ``context.get_remaining_time_in_millis()`` ...;
:class:`LambdaContext` has the same attributes and method. The remaining time
is measured on a monotonic clock from the moment the context is built, so a
wall-clock step during an invocation does not change it.
"""

from __future__ import annotations

import secrets
import sys
from datetime import UTC, datetime
from time import monotonic
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from broker.functions.invoker import InvokeRequest

LATEST = "$LATEST"


def seconds_until(deadline: datetime) -> float:
    """Seconds from now until ``deadline`` (negative once it has passed); naive means UTC."""
    if deadline.tzinfo is None:
        deadline = deadline.replace(tzinfo=UTC)
    return (deadline - datetime.now(UTC)).total_seconds()


def new_log_stream_name(now: datetime | None = None) -> str:
    """A log stream name like Lambda's, ``YYYY/MM/DD/[$LATEST]<32 hex digits>``.

    Lambda names one stream per execution environment, so an invoker makes one
    when it is created and gives it to every context it builds.
    """
    day = (now or datetime.now(UTC)).strftime("%Y/%m/%d")
    return f"{day}/[{LATEST}]{secrets.token_hex(16)}"


class LambdaContext:
    """What a handler learns about its invocation; the attributes of Lambda's Python context.

    ``memory_limit_in_mb`` is a ``str``, as in Lambda's runtime (it comes from
    ``AWS_LAMBDA_FUNCTION_MEMORY_SIZE``). ``identity`` and ``client_context`` are always
    ``None``: they only exist for invocations from the AWS mobile SDK.
    """

    __slots__ = (
        "_deadline",
        "aws_request_id",
        "client_context",
        "function_name",
        "function_version",
        "identity",
        "invoked_function_arn",
        "log_group_name",
        "log_stream_name",
        "memory_limit_in_mb",
    )

    def __init__(
        self,
        *,
        aws_request_id: str,
        function_name: str,
        invoked_function_arn: str,
        memory_limit_in_mb: int,
        remaining_s: float,
        log_stream_name: str | None = None,
        function_version: str = LATEST,
    ) -> None:
        self._deadline = monotonic() + remaining_s
        self.aws_request_id = aws_request_id
        self.function_name = function_name
        self.function_version = function_version
        self.invoked_function_arn = invoked_function_arn
        self.memory_limit_in_mb = str(memory_limit_in_mb)
        self.log_group_name = f"/aws/lambda/{function_name}"
        self.log_stream_name = log_stream_name or new_log_stream_name()
        self.identity: object | None = None
        self.client_context: object | None = None

    @classmethod
    def from_request(
        cls, request: InvokeRequest, memory_mb: int, *, log_stream_name: str | None = None
    ) -> LambdaContext:
        """The context for one attempt, its clock running until ``request.deadline``."""
        return cls(
            aws_request_id=request.request_id,
            function_name=request.function,
            invoked_function_arn=request.function_arn,
            memory_limit_in_mb=memory_mb,
            remaining_s=seconds_until(request.deadline),
            log_stream_name=log_stream_name,
        )

    def get_remaining_time_in_millis(self) -> int:
        """Milliseconds left before the invocation times out; 0 once it has."""
        remaining_ms = int((self._deadline - monotonic()) * 1000)
        return remaining_ms if remaining_ms > 0 else 0

    def log(self, message: object) -> None:
        """Write ``message`` to standard output, as Lambda's ``context.log`` does."""
        sys.stdout.write(str(message))

    def __repr__(self) -> str:
        return (
            f"LambdaContext(aws_request_id={self.aws_request_id!r}, "
            f"function_name={self.function_name!r}, "
            f"remaining_ms={self.get_remaining_time_in_millis()})"
        )
