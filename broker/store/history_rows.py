"""History events: what a queue that keeps its hot path outside SQL reports for the SQL store.

An event is a small JSON object, made where the change happens (enqueue,
settle) and turned into rows of ``invocations``, ``attempts`` and
``dead_letters`` by the history writer. Times are microseconds since the
epoch; payloads and results are text when they are UTF-8 (they nearly always
are: JSON), and ``{"b64": …}`` otherwise, so every byte comes back exactly.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from broker.models import NewInvocation, Settlement, State

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_US = timedelta(microseconds=1)
_TERMINAL = frozenset(state.value for state in State if state.terminal)
_SUCCEEDED = State.SUCCEEDED.value
KEPT_UNLESS_GIVEN = ("available_at", "payload", "source")
"""A settlement without these leaves the invocation's own."""


def us(when: datetime) -> int:
    """Microseconds since the epoch (exact as an integer below 2**53)."""
    return (when - _EPOCH) // _ONE_US


def from_us(value: int | str | bytes) -> datetime:
    return _EPOCH + timedelta(microseconds=int(value))


def _text(data: bytes | None) -> str | dict[str, str] | None:
    if data is None:
        return None
    try:
        return data.decode()
    except UnicodeDecodeError:
        return {"b64": base64.b64encode(data).decode()}


def _bytes(text: str | dict[str, str] | None) -> bytes | None:
    if text is None:
        return None
    if isinstance(text, dict):
        return base64.b64decode(text["b64"])
    return text.encode()


def loads(entry: bytes) -> list[dict[str, Any]]:
    """The events of one history stream entry."""
    events: list[dict[str, Any]] = orjson.loads(entry)
    return events


def enqueue_event(
    item: NewInvocation,
    first: datetime,
    available: datetime,
    now: datetime,
    *,
    out_of_line: bool = False,
) -> bytes:
    """``out_of_line``: the payload is not in the event; the writer reads it from Redis."""
    return orjson.dumps(
        {
            "k": "e",
            "px": out_of_line,
            "id": item.id,
            "r": item.request_id or item.id,
            "f": item.function,
            "o": item.origin.value,
            "s": dict(item.source),
            "l": item.lane,
            "key": item.idempotency_key,
            "y": item.sync,
            "p": None if out_of_line else _text(item.payload),
            "fq": us(first),
            "av": us(available),
            "u": us(now),
        }
    )


def settle_event(s: Settlement, now: datetime, *, payload_out_of_line: bool = False) -> bytes:
    a = s.attempt
    letter = s.dead_letter
    return orjson.dumps(
        {
            "k": "s",
            "px": payload_out_of_line,
            "id": s.invocation_id,
            "st": s.state.value,
            "fe": s.function_errors,
            "se": s.system_errors,
            "res": _text(s.result),
            "et": s.error_type,
            "em": s.error_message,
            "av": us(s.retry_at) if s.state is State.PENDING and s.retry_at else None,
            "u": us(now),
            "p": None if payload_out_of_line else _text(s.payload),
            "s": None if s.source is None else dict(s.source),
            "a": [
                a.number,
                us(a.started_at),
                a.duration_ms,
                a.status,
                a.error_type,
                a.error_message,
                list(a.error_trace) or None,
                a.log_excerpt,
            ],
            "dl": None
            if letter is None
            else {
                **letter.as_row(),
                "payload": _text(letter.payload),
                "first_enqueued_at": us(letter.first_enqueued_at),
                "dead_at": us(letter.dead_at),
            },
        }
    )


@dataclass(slots=True)
class Rows:
    """The SQL rows a run of history events comes to.

    ``new`` are invocations first seen in this run, already carrying the last
    state the run gives them; ``updates`` are the last states this run gives
    invocations that an earlier run wrote. ``out_of_line`` are invocations whose
    last payload in this run is in Redis, not in the events (``payload`` None
    until :meth:`fill_payloads`); ``finished`` reached a final state in this run.

    An out-of-line payload is copied with the invocation's final state only
    (:meth:`defer_unfinished_payloads`): until then it is in Redis, and a row
    rewritten with a large payload and again without it (a succeeded one not
    kept) or with the same one cost the SQL store more than the rest of the row.
    """

    new: dict[str, dict[str, Any]] = field(default_factory=dict)
    updates: dict[str, dict[str, Any]] = field(default_factory=dict)
    attempts: list[dict[str, Any]] = field(default_factory=list)
    dead_letters: list[dict[str, Any]] = field(default_factory=list)
    out_of_line: set[str] = field(default_factory=set)
    finished: list[str] = field(default_factory=list)

    def add(self, event: dict[str, Any]) -> None:
        if event["k"] == "e":
            self._enqueued(event)
        else:
            self._settled(event)

    def _enqueued(self, event: dict[str, Any]) -> None:
        id = event["id"]
        if id not in self.new:
            self.new[id] = _invocation_row(event)
            if event.get("px"):
                self.out_of_line.add(id)

    def _settled(self, event: dict[str, Any]) -> None:
        id = event["id"]
        state = _state_of(event)
        if state["payload"] is not None:
            self.out_of_line.discard(id)
        elif event.get("px"):
            self.out_of_line.add(id)
        if state["state"] in _TERMINAL:
            self.finished.append(id)
        row = self.new.get(id)
        if row is not None and row["attempts"] <= state["attempts"]:
            row.update(
                {k: v for k, v in state.items() if k not in KEPT_UNLESS_GIVEN or v is not None}
            )
        elif row is None:
            earlier = self.updates.get(id)  # events of one invocation come in order
            if earlier is not None:
                for kept in KEPT_UNLESS_GIVEN:
                    if state[kept] is None:
                        state[kept] = earlier[kept]
            state["id"] = id
            self.updates[id] = state
        self.attempts.append(_attempt_row(event))
        if event["dl"] is not None:
            self.dead_letters.append(_dead_letter_row(event["dl"]))

    def finished_apart(self, ids: Iterable[str]) -> None:
        """``ids`` finished (in this run) with a payload that an earlier event put out of
        line: it is read from Redis with their final state."""
        self.out_of_line.update(ids)

    def defer_unfinished_payloads(self) -> None:
        """Out-of-line payloads of invocations not finished in this run stay in Redis: their
        rows hold an empty payload (never an event's: events are JSON) until then."""
        finished = set(self.finished)
        for id in [id for id in self.out_of_line if id not in finished]:
            self.out_of_line.discard(id)
            row = self.new.get(id) or self.updates.get(id)
            if row is not None:
                row["payload"] = b""

    def drop_succeeded_payloads(self) -> None:
        """Give the invocations whose last state in this run is succeeded an empty payload
        (``EVENTWIRE_KEEP_SUCCEEDED_PAYLOADS`` off): an update then empties the one an
        earlier run wrote, and an out-of-line payload is not read from Redis."""
        for rows in (self.new, self.updates):
            for id, row in rows.items():
                if row["state"] == _SUCCEEDED:
                    row["payload"] = b""
                    self.out_of_line.discard(id)

    def fill_payloads(self, payloads: dict[str, bytes]) -> None:
        """Give the ``out_of_line`` invocations their payloads, as read from Redis."""
        for id, payload in payloads.items():
            row = self.new.get(id) or self.updates.get(id)
            if row is not None:
                row["payload"] = payload


def _invocation_row(e: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": e["id"],
        "request_id": e["r"],
        "function": e["f"],
        "origin": e["o"],
        "source": e["s"],
        "lane": e["l"],
        "idempotency_key": e["key"],
        "sync": e["y"],
        "payload": _bytes(e["p"]),
        "state": State.PENDING.value,
        "attempts": 0,
        "function_errors": 0,
        "system_errors": 0,
        "first_enqueued_at": from_us(e["fq"]),
        "available_at": from_us(e["av"]),
        "updated_at": from_us(e["u"]),
        "finished_at": None,
        "result": None,
        "error_type": None,
        "error_message": None,
    }


def _state_of(e: dict[str, Any]) -> dict[str, Any]:
    terminal = e["st"] in _TERMINAL
    updated = from_us(e["u"])
    state = {
        "state": e["st"],
        "attempts": e["a"][0],
        "function_errors": e["fe"],
        "system_errors": e["se"],
        "result": _bytes(e["res"]),
        "error_type": e["et"],
        "error_message": e["em"],
        "updated_at": updated,
        "finished_at": updated if terminal else None,
        "available_at": None if e["av"] is None else from_us(e["av"]),
        "payload": _bytes(e.get("p")),
        "source": e.get("s"),
    }
    return state


def _attempt_row(e: dict[str, Any]) -> dict[str, Any]:
    number, started, duration, status, error_type, error_message, trace, log = e["a"]
    return {
        "invocation_id": e["id"],
        "number": number,
        "started_at": from_us(started),
        "duration_ms": duration,
        "status": status,
        "error_type": error_type,
        "error_message": error_message,
        "error_trace": trace,
        "log_excerpt": log,
    }


def _dead_letter_row(d: dict[str, Any]) -> dict[str, Any]:
    return {
        **d,
        "payload": _bytes(d["payload"]),
        "first_enqueued_at": from_us(d["first_enqueued_at"]),
        "dead_at": from_us(d["dead_at"]),
    }
