"""The poller of the ``sqs`` source kind (:data:`broker.sources.pollers.POLLERS`)."""

from __future__ import annotations

from broker.config.mappings import SourceKind
from broker.sources.pollers import PollerContext
from pollers.mapping_runner import MappingPoller
from pollers.sqs.reader import SqsReader
from pollers.sqs.records import shaper, traceparent
from pollers.sqs.run import SqsRun


def create(context: PollerContext) -> MappingPoller:
    return MappingPoller(context, SourceKind.SQS, SqsReader, shaper, traceparent, run_kind=SqsRun)
