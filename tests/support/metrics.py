"""Reading Prometheus figures as a scrape would: from the text format, with its parser."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from broker.observability.metrics import Metrics

METRICS_URL = r"metrics: serving on (\S+)"
"""What ``serve --metrics-listen`` logs: its URL, for :meth:`Serve.logged`."""

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse(text: str) -> Samples:
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    """The sample ``name`` with exactly ``labels``; 0 when there is none."""
    return samples.get((name, frozenset(labels.items())), 0.0)


def figure(metrics: Metrics, name: str, **labels: str) -> float:
    """What a scrape of ``metrics`` says of ``name`` with ``labels``."""
    return value(parse(metrics.exposition().decode()), name, **labels)
