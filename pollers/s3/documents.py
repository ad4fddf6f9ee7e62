"""A mapping whose records are S3 notification documents (``object_notifications:``).

MinIO and Ceph RGW publish to RabbitMQ and Kafka (and a bridge to a Redis
stream) the documents they POST to webhooks: MinIO's
``{"EventName", "Key", "Records": [...]}``, Ceph's ``{"Records": [...]}``.
For such a mapping, each record read (a message's body, a Kafka record's
value, a stream entry's ``body`` field) is one document, and each S3 record
in it that passes the mapping's events/prefix/suffix filter is one
invocation, made exactly as the webhook makes it
(:mod:`pollers.s3.invocations`: Lambda's S3 event, the same idempotency
key). The reader enqueues them, and checkpoints only after, like any
mapping's batch.

A record that is not a document (not JSON, no ``Records``, a record
without ``s3.object.key`` …) is never invoked, and neither lost nor in the
way: it becomes a dead letter of the mapping's function (error type
``InvalidS3Notification``, the reason and where it was read in the
message, the record's data as the payload), and with ``on_failure`` Lambda's
mapping failure record goes there too (``condition: InvalidS3Notification``,
``errorMessage``, the batch info and the record). Its id derives from where
the record was read, so a record read again after a crash is still one
dead letter.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from broker.config.mappings import MappingConfig, SourceKind
from broker.config.settings import Settings
from broker.destinations import FollowOns, parse_destination
from broker.events.batch_results import MappingCondition, mapping_failure_record
from broker.events.s3 import S3DocumentError
from broker.models import Condition, DeadLetter, NewInvocation, Origin
from pollers.batching import Batch, Record, Shaper
from pollers.s3.invocations import notified

INVALID = MappingCondition.INVALID_S3_NOTIFICATION
_LETTERS = uuid.UUID("6f1c1a52-8d0e-4a8e-9a57-3b0d2f3e5c11")
"""The namespace of dead letter ids derived from where a record was read (UUIDv5)."""


@dataclass(slots=True)
class Planned:
    """What a run of records comes to: invocations (and failure records) to enqueue, dead
    letters to keep."""

    invocations: list[NewInvocation] = field(default_factory=list)
    dead_letters: list[DeadLetter] = field(default_factory=list)
    documents: int = 0
    s3_records: int = 0


class NotificationDocuments:
    """Reads the records of one ``object_notifications`` mapping as S3 notification documents."""

    def __init__(
        self,
        mapping: MappingConfig,
        settings: Settings,
        shape: Shaper,
    ) -> None:
        assert mapping.object_notifications is not None
        self.mapping = mapping
        self.notifications = mapping.object_notifications
        self.region = settings.region
        self.function_arn = settings.function_arn(mapping.function)
        self.shape = shape
        self.on_failure = parse_destination(mapping.on_failure) if mapping.on_failure else None

    def plan(self, batches: Sequence[Batch], generation: int, now: datetime) -> Planned:
        """The invocations and dead letters of every record of ``batches``, in order."""
        planned = Planned()
        for batch in batches:
            for record in batch.records:
                self._read(record, generation, now, planned)
        return planned

    def _read(self, record: Record, generation: int, now: datetime, planned: Planned) -> None:
        source = {
            "mapping": {"name": self.mapping.name},
            "position": {
                "partition": record.partition,
                "first": record.position,
                "last": record.position,
            },
        }
        try:
            found = notified(
                self._document(record),
                function=self.mapping.function,
                s3_filter=self.notifications.filter,
                region=self.region,
                source=source,
                replay=generation,
            )
        except S3DocumentError as exc:
            self._give_up(record, str(exc), source, generation, now, planned)
            return
        planned.documents += 1
        planned.s3_records += found.records
        planned.invocations.extend(found.invocations)

    def _document(self, record: Record) -> bytes | str:
        if isinstance(record.json_data, Mapping):  # a stream entry: the document is a field
            name = self.notifications.field_name
            value = record.json_data.get(name)
            if value is None:
                fields = ", ".join(sorted(record.json_data)) or "none"
                raise S3DocumentError(
                    f"the entry has no field {name!r} (object_notifications.field names the "
                    f"one holding the document); its fields: {fields}"
                )
            return str(value)
        if record.data is None:
            raise S3DocumentError("the record has no value")
        return record.data

    def _give_up(
        self,
        record: Record,
        reason: str,
        source: Mapping[str, Any],
        generation: int,
        now: datetime,
        planned: Planned,
    ) -> None:
        letter_id = str(uuid.uuid5(_LETTERS, self._identity(record, generation)))
        message = f"{self._where(record)} is not an S3 notification document: {reason}"
        planned.dead_letters.append(
            DeadLetter(
                id=letter_id,
                invocation_id=letter_id,  # never invoked: no invocation of its own
                request_id=letter_id,
                function=self.mapping.function,
                payload=self._kept(record),
                origin=Origin.OBJECT_NOTIFICATION,
                condition=Condition.RETRIES_EXHAUSTED,  # what a mapping's dead letters carry
                error_type=INVALID.value,
                error_message=message,
                attempts=0,
                first_enqueued_at=now,
                dead_at=now,
                source=source,
            )
        )
        if self.on_failure is None:
            return
        failure = mapping_failure_record(
            json.loads(self.shape([record.item])),
            condition=INVALID,
            function_arn=self.function_arn,
            request_id=letter_id,
            approximate_invoke_count=0,
            now=now,
            include_payload=True,
            error_message=message,
        )
        follow_ons = FollowOns(invocation_id=letter_id)
        self.on_failure.plan(failure, follow_ons)  # `dlq`: the dead letter above is it
        planned.invocations.extend(follow_ons.enqueue)

    def _identity(self, record: Record, generation: int) -> str:
        """Where ``record`` was read; a RabbitMQ message without a ``message_id`` has no
        lasting position, so its data stands in (the same bad message twice is one letter)."""
        position = record.position
        if position.startswith("~"):
            position = "sha256:" + hashlib.sha256(self._kept(record)).hexdigest()
        return f"{self.mapping.name}:{generation}:{record.partition}:{position}"

    def _where(self, record: Record) -> str:
        kind = self.mapping.kind
        if kind is SourceKind.KAFKA:
            return (
                f"mapping {self.mapping.name}: the record at offset {record.position} "
                f"of {record.partition}"
            )
        if kind is SourceKind.REDIS:
            return (
                f"mapping {self.mapping.name}: entry {record.position} of stream {record.partition}"
            )
        if record.position.startswith("~"):
            return f"mapping {self.mapping.name}: a message of queue {record.partition}"
        return (
            f"mapping {self.mapping.name}: message {record.position.rstrip('+')} "
            f"of queue {record.partition}"
        )

    def _kept(self, record: Record) -> bytes:
        """What a dead letter keeps of ``record``: its document (a stream entry without the
        document's field: all its fields, as JSON)."""
        if isinstance(record.json_data, Mapping):
            value = record.json_data.get(self.notifications.field_name)
            if value is not None:
                return str(value).encode()
            return json.dumps(record.json_data, separators=(",", ":"), ensure_ascii=False).encode()
        if record.data is None:
            return b""
        return record.data.encode() if isinstance(record.data, str) else record.data
