"""``eventwire_mapping_partition_lag``: a process reports the partitions it reads, and
stops reporting those taken over by another process (whose figure counts instead)."""

from __future__ import annotations

from broker.observability.metrics import Metrics
from tests.support.metrics import parse


def lags(metrics: Metrics) -> dict[str, float]:
    samples = parse(metrics.exposition().decode())
    return {
        dict(labels)["partition"]: figure
        for (name, labels), figure in samples.items()
        if name == "eventwire_mapping_partition_lag"
    }


def test_partitions_no_longer_read_stop_being_reported() -> None:
    metrics = Metrics()
    metrics.set_partition_lag("m", {"t-0": 5, "t-1": 7})
    assert lags(metrics) == {"t-0": 5, "t-1": 7}
    metrics.set_partition_lag("m", {"t-1": 0})  # t-0 went to another process
    assert lags(metrics) == {"t-1": 0}
    metrics.set_partition_lag("m", {})  # the mapping stopped here
    assert lags(metrics) == {}
