"""Dashboard, alerts and autoscaler rules name only metrics the servers really export."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from orpheus_tts.gateway.metrics import GatewayMetrics
from orpheus_tts.serving.metrics import EngineCounters, ServiceMetrics
from tests.deploy.manifests import DEPLOY, exported, k8s_named, yaml_documents

DASHBOARD = DEPLOY / "grafana" / "orpheus-dashboard.json"
ALERTS = DEPLOY / "prometheus" / "alerts.yaml"
ADAPTER = DEPLOY / "prometheus" / "adapter-rules.yaml"
METRIC_RE = re.compile(r"\b(orpheus_[a-z0-9_]+)\b")


class _CountingEngine:
    name = "orpheus"

    def counters(self) -> dict[str, int]:
        return {"tokens": 1}


@pytest.fixture(scope="module")
def series() -> dict[str, dict[str, str]]:
    worker = ServiceMetrics("worker")
    worker.registry.register(EngineCounters(_CountingEngine()))
    return {"worker": exported(worker.registry), "gateway": exported(GatewayMetrics().registry)}


def known(series: dict[str, dict[str, str]]) -> set[str]:
    return set(series["worker"]) | set(series["gateway"])


def test_the_metric_inventory_is_what_the_docs_promise(series: dict[str, dict[str, str]]) -> None:
    assert {"orpheus_requests_total", "orpheus_requests_waiting", "orpheus_engine_events_total"} <= set(
        series["worker"]
    )
    assert {"orpheus_upstream_up", "orpheus_circuit_open", "orpheus_hedges_total", "orpheus_failovers_total"} <= set(
        series["gateway"]
    )


def dashboard_panels() -> list[dict[str, Any]]:
    return [p for p in json.loads(DASHBOARD.read_text(encoding="utf-8"))["panels"] if p["type"] != "row"]


def test_dashboard_queries_name_real_metrics(series: dict[str, dict[str, str]]) -> None:
    panels = dashboard_panels()
    assert len(panels) >= 12
    used = set()
    for panel in panels:
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            names = set(METRIC_RE.findall(target["expr"]))
            assert names, f"{panel['title']}: no orpheus_ metric in {target['expr']}"
            assert names <= known(series), f"{panel['title']}: unknown {names - known(series)}"
            used |= names
    # Every family a server exports appears somewhere on the dashboard.
    families = {re.sub(r"_(bucket|sum|count|total)$", "", n) for n in known(series)}
    shown = {re.sub(r"_(bucket|sum|count|total)$", "", n) for n in used}
    assert families <= shown, f"not on the dashboard: {sorted(families - shown)}"


def test_dashboard_layout_is_sound() -> None:
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    cells: set[tuple[int, int]] = set()
    for panel in dashboard["panels"]:
        pos = panel["gridPos"]
        assert pos["x"] >= 0, panel["title"]
        assert pos["x"] + pos["w"] <= 24, panel["title"]
        area = {(x, y) for x in range(pos["x"], pos["x"] + pos["w"]) for y in range(pos["y"], pos["y"] + pos["h"])}
        assert not area & cells, f"{panel['title']} overlaps another panel"
        cells |= area
    variables = {v["name"] for v in dashboard["templating"]["list"]}
    assert variables == {"datasource", "namespace"}


def alert_rules() -> list[dict[str, Any]]:
    (document,) = yaml_documents(ALERTS)
    return [rule for group in document["groups"] for rule in group["rules"]]


def test_alerts_are_complete_and_name_real_metrics(series: dict[str, dict[str, str]]) -> None:
    rules = alert_rules()
    assert len(rules) >= 8
    names = [r["alert"] for r in rules]
    assert len(names) == len(set(names))
    for rule in rules:
        assert rule["labels"]["severity"] in ("critical", "warning", "info"), rule["alert"]
        assert rule["annotations"]["summary"], rule["alert"]
        metrics = set(METRIC_RE.findall(rule["expr"]))
        assert metrics, rule["alert"]
        assert metrics <= known(series), f"{rule['alert']}: unknown {metrics - known(series)}"


def test_autoscaler_metric_is_a_worker_gauge_the_adapter_exposes(series: dict[str, dict[str, str]]) -> None:
    hpa = k8s_named("HorizontalPodAutoscaler", "orpheus-worker")
    name = hpa["spec"]["metrics"][0]["pods"]["metric"]["name"]
    assert series["worker"][name] == "gauge"
    (values,) = yaml_documents(ADAPTER)
    (rule,) = values["rules"]["custom"]
    assert rule["name"]["as"] == name
    assert re.fullmatch(rule["name"]["matches"], name)
    assert set(METRIC_RE.findall(rule["seriesQuery"])) == {name}
    assert set(rule["resources"]["overrides"]) == {"namespace", "pod"}
    assert 'role="worker"' in rule["metricsQuery"]
