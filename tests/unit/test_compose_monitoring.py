"""Prometheus and Grafana in ``compose/``, checked statically as the rest of the stack is:
Prometheus scrapes every ``eventwire`` replica where it answers ``/metrics``, and every
alert and dashboard panel names metrics Eventwire exposes (a renamed metric fails here,
not on a dashboard gone blank)."""

from __future__ import annotations

import json
import re
from pathlib import PurePosixPath
from typing import Any

import yaml

from broker.observability.metrics import Metrics
from tests.unit.test_compose import (  # noqa: F401
    COMPOSE_DIR,
    compose,
    environment,
    host_path,
    services,
)

SUFFIXES = ("_bucket", "_count", "_sum", "_total", "_created")


def exposed() -> set[str]:
    """The names of every metric family a ``serve`` process exposes."""
    return {family.name for family in Metrics().registry.collect()}


def named_in(expression: str) -> set[str]:
    """The metric families a PromQL expression reads."""
    names = set()
    for name in re.findall(r"\beventwire_[a-z_]+", expression):
        for suffix in SUFFIXES:
            if name.endswith(suffix) and name.removesuffix(suffix) in exposed():
                name = name.removesuffix(suffix)
                break
        names.add(name)
    return names


def mounted(service: dict[str, Any], container_path: str) -> Any:
    source = host_path(service, PurePosixPath(container_path))
    assert source is not None, f"nothing is mounted at {container_path}"
    assert source.exists(), f"{source} (mounted at {container_path}) is missing"
    return source


def test_prometheus_scrapes_each_replica_where_it_answers(
    services: dict[str, dict[str, Any]],  # noqa: F811
) -> None:
    prometheus = services["prometheus"]
    config = yaml.safe_load(mounted(prometheus, "/etc/prometheus/prometheus.yml").read_text())
    [job] = [j for j in config["scrape_configs"] if j["job_name"] == "eventwire"]
    assert job.get("metrics_path", "/metrics") == "/metrics"
    [sd] = job["dns_sd_configs"]
    assert sd["names"] == ["eventwire"] and sd["type"] == "A"
    listen = environment(services["eventwire"])["EVENTWIRE_API_LISTEN"]
    assert listen.rpartition(":")[2] == str(sd["port"]), "scraped on another port than served"
    for rules in config["rule_files"]:
        mounted(prometheus, rules)


def test_every_alert_reads_metrics_eventwire_exposes(
    services: dict[str, dict[str, Any]],  # noqa: F811
) -> None:
    alerts = yaml.safe_load(
        mounted(services["prometheus"], "/etc/prometheus/alerts.yml").read_text()
    )
    rules = [rule for group in alerts["groups"] for rule in group["rules"]]
    assert {r["alert"] for r in rules} >= {
        "EventwireDeadLettersGrowing",
        "EventwireMappingLagGrowing",
        "EventwireOldestPendingNearMaxEventAge",
    }
    for rule in rules:
        names = named_in(rule["expr"])
        assert names, f"{rule['alert']} reads no Eventwire metric"
        assert names <= exposed(), f"{rule['alert']}: no such metric {names - exposed()}"


def test_grafana_provisions_the_dashboard_and_its_panels_read_real_metrics(
    services: dict[str, dict[str, Any]],  # noqa: F811
) -> None:
    grafana = services["grafana"]
    provisioning = mounted(grafana, "/etc/grafana/provisioning")
    [source] = yaml.safe_load((provisioning / "datasources/prometheus.yml").read_text())[
        "datasources"
    ]
    assert source["url"] == "http://prometheus:9090" and "prometheus" in services
    [provider] = yaml.safe_load((provisioning / "dashboards/eventwire.yml").read_text())[
        "providers"
    ]
    folder = mounted(grafana, provider["options"]["path"])
    dashboard = json.loads((folder / "eventwire.json").read_text())
    exprs = [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
    read = set().union(*(named_in(e) for e in exprs))
    assert read <= exposed(), f"panels read metrics that do not exist: {read - exposed()}"
    for wanted in (
        "eventwire_invocations",
        "eventwire_errors",
        "eventwire_duration_seconds",
        "eventwire_pending_invocations",
        "eventwire_oldest_pending_age_seconds",
        "eventwire_mapping_lag",
        "eventwire_dlq_size",
    ):
        assert wanted in read, f"the dashboard shows no {wanted}"
    for panel in dashboard["panels"]:
        assert panel["datasource"]["uid"] == source["uid"], panel["title"]
