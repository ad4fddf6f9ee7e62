"""A handler written for Lambda with AWS Lambda Powertools, unchanged: it checks its event
against Powertools' strict ``SqsModel`` and processes the batch with ``BatchProcessor``
(``EventType.SQS``), answering Lambda's partial batch response.

A record whose body's ``n`` is a multiple of five fails on its first receive. Every
attempt at a record is appended to the file named by ``POWERTOOLS_TEST_SINK``:
``{"n", "messageId", "receives", "ok"}``.
"""

from __future__ import annotations

import json
import os
from typing import Any

from aws_lambda_powertools.utilities.batch import (
    BatchProcessor,
    EventType,
    process_partial_response,
)
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.parser.models import SqsModel

processor = BatchProcessor(event_type=EventType.SQS)


def _write(entry: dict[str, Any]) -> None:
    fd = os.open(os.environ["POWERTOOLS_TEST_SINK"], os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    try:
        os.write(fd, (json.dumps(entry) + "\n").encode())
    finally:
        os.close(fd)


def record_handler(record: SQSRecord) -> None:
    n = json.loads(record.body)["n"]
    receives = record.attributes.approximate_receive_count
    ok = not (n % 5 == 0 and receives == "1")
    _write({"n": n, "messageId": record.message_id, "receives": receives, "ok": ok})
    if not ok:
        raise ValueError(f"record {n} fails on its first receive")


def handler(event: dict[str, Any], context: Any) -> Any:
    SqsModel.model_validate(event)  # the strict parser model Powertools' @event_parser uses
    return process_partial_response(
        event=event, record_handler=record_handler, processor=processor, context=context
    )
