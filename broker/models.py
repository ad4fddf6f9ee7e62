"""The domain model: invocations, leases, outcomes and settlements.

Everything here is plain data. The queue backends persist it, the dispatcher
moves it through its states, the invokers produce :data:`Outcome` values.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any


class State(enum.StrEnum):
    """Where an invocation is in its life.

    ``pending`` covers both "never run" and "waiting for a retry" (then
    ``attempts > 0`` and ``available_at`` lies in the future).
    """

    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"

    @property
    def terminal(self) -> bool:
        return self in (State.SUCCEEDED, State.FAILED)


class Origin(enum.StrEnum):
    """What produced an invocation."""

    API = "api"
    SCHEDULE = "schedule"
    MAPPING = "mapping"
    DESTINATION = "destination"
    REDRIVE = "redrive"
    OBJECT_NOTIFICATION = "notification"


class Condition(enum.StrEnum):
    """Why an asynchronous invocation ended, as in Lambda's invocation records."""

    SUCCESS = "Success"
    RETRIES_EXHAUSTED = "RetriesExhausted"
    EVENT_AGE_EXCEEDED = "EventAgeExceeded"


@dataclass(frozen=True, slots=True)
class NewInvocation:
    """A request to run ``function`` once with ``payload``; what ``enqueue`` takes.

    ``id`` is chosen by the caller (a UUIDv7 from :func:`broker.ids.new_id`) so a
    batch can be written without a round trip per row. ``request_id`` defaults
    to ``id``; every attempt of the invocation carries it.
    """

    id: str
    function: str
    payload: bytes
    origin: Origin = Origin.API
    lane: str | None = None
    idempotency_key: str | None = None
    sync: bool = False
    available_at: datetime | None = None
    first_enqueued_at: datetime | None = None
    request_id: str | None = None
    source: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Enqueued:
    """The answer to one enqueue: the invocation's id and whether it is new."""

    id: str
    created: bool


@dataclass(frozen=True, slots=True)
class Invocation:
    """An invocation as stored, as the dispatcher sees it when it leases one."""

    id: str
    request_id: str
    function: str
    payload: bytes
    origin: Origin
    lane: str | None
    idempotency_key: str | None
    sync: bool
    state: State
    attempts: int
    function_errors: int
    system_errors: int
    first_enqueued_at: datetime
    available_at: datetime
    source: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Lease:
    """An invocation held by one dispatcher until ``expires_at``.

    ``token`` is unique to this lease: settling or extending with a token whose
    lease has expired and been taken by another dispatcher does nothing.
    ``invocation.attempts`` already counts the attempt this lease is for.
    """

    token: str
    invocation: Invocation
    expires_at: datetime


@dataclass(frozen=True, slots=True)
class FunctionLimits:
    """What the queue needs to know about a function to lease it."""

    lease_s: float
    reserved_concurrency: int | None = None
    at_most: int | None = None
    """This lease call takes at most this many of the function: the leasing
    process's own room for it (a process pool's free workers). Unlike
    ``reserved_concurrency`` it is not shared with other processes."""


# ---------------------------------------------------------------- outcomes


@dataclass(frozen=True, slots=True)
class Success:
    """The function returned; ``payload`` is its response as JSON bytes.

    ``log`` (on every outcome) is what the function wrote to stdout/stderr
    during the attempt, capped by the invoker; it is not part of equality.
    """

    payload: bytes
    log: str = field(default="", compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class FunctionError:
    """The function ran and failed: it raised, timed out, or its runtime died.

    ``error_type`` follows Lambda's names: the exception's class name for an
    unhandled error, ``Task.TimedOut``, ``Runtime.ExitError``,
    ``Runtime.ImportModuleError`` ...  ``retry_after_s`` (a destination's
    ``Retry-After``) is the least delay before the retry.
    """

    error_type: str
    message: str
    trace: tuple[str, ...] = ()
    log: str = field(default="", compare=False, repr=False)
    retry_after_s: float | None = None

    @property
    def timed_out(self) -> bool:
        return self.error_type == "Task.TimedOut"


@dataclass(frozen=True, slots=True)
class SystemFault:
    """The function could not be run at all; retried without using up attempts.

    ``retry_after_s`` (a throttle's ``Retry-After``) is the least delay before
    the retry; the system backoff applies when it is longer.
    """

    error_type: str
    message: str
    retry_after_s: float | None = None
    log: str = field(default="", compare=False, repr=False)


Outcome = Success | FunctionError | SystemFault


# ---------------------------------------------------------------- settlement


@dataclass(frozen=True, slots=True)
class AttemptRecord:
    """One attempt as kept in the history."""

    number: int
    started_at: datetime
    duration_ms: float
    status: str  # "success" | "error" | "timeout" | "system_error" | "skipped"
    error_type: str | None = None
    error_message: str | None = None
    error_trace: tuple[str, ...] = ()
    log_excerpt: str | None = None


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """An event that ended in the dead-letter queue, and why."""

    id: str
    invocation_id: str
    request_id: str
    function: str
    payload: bytes
    origin: Origin
    condition: Condition
    error_type: str | None
    error_message: str | None
    attempts: int
    first_enqueued_at: datetime
    dead_at: datetime
    source: Mapping[str, Any] = field(default_factory=dict)

    def as_row(self) -> dict[str, Any]:
        """The ``dead_letters`` row it is stored as (enums as their values)."""
        return {
            "id": self.id,
            "invocation_id": self.invocation_id,
            "request_id": self.request_id,
            "function": self.function,
            "payload": self.payload,
            "origin": self.origin.value,
            "source": dict(self.source),
            "condition": self.condition.value,
            "error_type": self.error_type,
            "error_message": self.error_message,
            "attempts": self.attempts,
            "first_enqueued_at": self.first_enqueued_at,
            "dead_at": self.dead_at,
        }


@dataclass(frozen=True, slots=True)
class Settlement:
    """Everything that follows from one attempt, applied by the queue atomically.

    ``state`` is the invocation's next state: ``pending`` (a retry at
    ``retry_at``), ``succeeded`` or ``failed``. ``enqueue`` are follow-on
    invocations (function destinations); ``dead_letter`` the DLQ entry.
    A ``pending`` settlement may give the invocation a new ``payload`` and
    ``source`` (None keeps them): a mapping's batch retried reduced, or
    bisected, runs as the same invocation at the head of its lane.

    ``chain_lease_s``: when this settlement ends an invocation of a lane, the
    queue may lease the lane's next invocation (if it is due) to the same owner
    for that long and answer it with the settlement; it takes this one's place
    in the running counts. A queue may ignore it.
    """

    lease_token: str
    invocation_id: str
    state: State
    attempt: AttemptRecord
    retry_at: datetime | None = None
    function_errors: int = 0
    system_errors: int = 0
    result: bytes | None = None
    error_type: str | None = None
    error_message: str | None = None
    enqueue: tuple[NewInvocation, ...] = ()
    dead_letter: DeadLetter | None = None
    payload: bytes | None = None
    source: Mapping[str, Any] | None = None
    chain_lease_s: float | None = None
