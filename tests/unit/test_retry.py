"""Retry decisions follow Lambda's asynchronous invocation rules."""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime, timedelta

import pytest

from broker.config.models import Backoff, RetryPolicy
from broker.destinations.records import invocation_record
from broker.dispatch.retry import backoff_delay, decide, is_expired
from broker.models import (
    Condition,
    FunctionError,
    Invocation,
    Origin,
    State,
    Success,
    SystemFault,
)

T0 = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
ERROR = FunctionError("ValueError", "boom", ("trace",))


def invocation(**kw: object) -> Invocation:
    values: dict[str, object] = dict(
        id="i",
        request_id="r",
        function="f",
        payload=b'{"a": 1}',
        origin=Origin.API,
        lane=None,
        idempotency_key=None,
        sync=False,
        state=State.RUNNING,
        attempts=1,
        function_errors=0,
        system_errors=0,
        first_enqueued_at=T0,
        available_at=T0,
    )
    values.update(kw)
    return Invocation(**values)  # type: ignore[arg-type]


def test_backoff_grows_and_is_capped() -> None:
    b = Backoff(initial_s=1.0, multiplier=2.0, max_s=5.0, jitter=0.0)
    assert [backoff_delay(n, b) for n in (1, 2, 3, 4)] == [1.0, 2.0, 4.0, 5.0]


def test_jitter_only_shortens_within_its_fraction() -> None:
    b = Backoff(initial_s=10.0, multiplier=1.0, max_s=10.0, jitter=0.2)
    delays = [backoff_delay(1, b, random.Random(seed)) for seed in range(200)]
    assert all(8.0 <= d <= 10.0 for d in delays)
    assert len(set(delays)) > 100


def test_function_errors_retry_until_max_attempts() -> None:
    policy = RetryPolicy(max_attempts=3)
    first = decide(invocation(), ERROR, policy, T0, random.Random(1))
    assert first.state is State.PENDING and first.function_errors == 1
    assert first.retry_at is not None and first.retry_at > T0
    last = decide(invocation(attempts=3, function_errors=2), ERROR, policy, T0)
    assert (last.state, last.condition) == (State.FAILED, Condition.RETRIES_EXHAUSTED)


def test_system_errors_do_not_use_up_attempts() -> None:
    policy = RetryPolicy(max_attempts=1)
    decision = decide(invocation(), SystemFault("Invoker.Down", "x"), policy, T0)
    assert decision.state is State.PENDING
    assert (decision.function_errors, decision.system_errors) == (0, 1)
    assert decision.retry_at is not None and decision.retry_at <= T0 + timedelta(seconds=1)


def test_look_ahead_fails_an_event_whose_retry_would_be_too_old() -> None:
    policy = RetryPolicy(max_event_age_s=60.0, backoff=Backoff(initial_s=60.0))
    now = T0 + timedelta(milliseconds=10)
    decision = decide(invocation(), ERROR, policy, now, random.Random(0))
    assert (decision.state, decision.condition) == (State.FAILED, Condition.EVENT_AGE_EXCEEDED)


def test_sync_invocations_are_not_retried() -> None:
    decision = decide(invocation(sync=True), ERROR, RetryPolicy(), T0)
    assert decision.state is State.FAILED


def test_success_and_expiry() -> None:
    assert decide(invocation(), Success(b"1"), RetryPolicy(), T0).condition is Condition.SUCCESS
    policy = RetryPolicy(max_event_age_s=60.0)
    assert not is_expired(invocation(), policy, T0 + timedelta(seconds=60))
    assert is_expired(invocation(), policy, T0 + timedelta(seconds=61))
    assert not is_expired(invocation(sync=True), policy, T0 + timedelta(days=1))


@pytest.mark.parametrize("outcome", [Success(b'{"ok": true}'), ERROR])
def test_invocation_record_has_lambdas_shape(outcome: Success | FunctionError) -> None:
    condition = Condition.SUCCESS if isinstance(outcome, Success) else Condition.RETRIES_EXHAUSTED
    record = json.loads(
        invocation_record(
            invocation(attempts=3), outcome, condition, "arn:aws:lambda:x:1:function:f", T0
        )
    )
    assert record["version"] == "1.0"
    assert record["timestamp"] == "2026-11-23T12:00:00.000Z"
    assert record["requestContext"] == {
        "requestId": "r",
        "functionArn": "arn:aws:lambda:x:1:function:f:$LATEST",
        "condition": condition.value,
        "approximateInvokeCount": 3,
    }
    assert record["requestPayload"] == {"a": 1}
    if isinstance(outcome, Success):
        assert record["responsePayload"] == {"ok": True}
        assert "functionError" not in record["responseContext"]
    else:
        assert record["responseContext"]["functionError"] == "Unhandled"
        assert record["responsePayload"]["errorType"] == "ValueError"
        assert record["responsePayload"]["stackTrace"] == ["trace"]


def test_a_throttle_waits_at_least_its_retry_after() -> None:
    throttled = SystemFault("Throttled", "HTTP 429", retry_after_s=120.0)
    decision = decide(invocation(), throttled, RetryPolicy(), T0, random.Random(1))
    assert decision.state is State.PENDING
    assert decision.retry_at == T0 + timedelta(seconds=120)
    assert (decision.function_errors, decision.system_errors) == (0, 1)


def test_a_short_retry_after_does_not_undercut_the_backoff() -> None:
    throttled = SystemFault("Throttled", "HTTP 503", retry_after_s=0.0)
    previous = invocation(system_errors=3)  # the fourth system error backs off 8 s
    decision = decide(previous, throttled, RetryPolicy(), T0)
    assert decision.retry_at is not None
    assert decision.retry_at >= T0 + timedelta(seconds=8 * 0.9)


def test_a_retry_after_past_the_event_age_fails_the_event_now() -> None:
    policy = RetryPolicy(max_event_age_s=60)
    throttled = SystemFault("Throttled", "HTTP 429", retry_after_s=3600.0)
    decision = decide(invocation(), throttled, policy, T0)
    assert (decision.state, decision.condition) == (State.FAILED, Condition.EVENT_AGE_EXCEEDED)
