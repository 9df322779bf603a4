"""config/dashboard.json is an importable Grafana dashboard whose queries use only metrics
govpipe really exports (or the recording rules of config/alerts.yml), and parse."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import pytest

from tests.ops.rules import ROOT, exported_names, metric_names, recording_rules
from tests.support.infra.prometheus import Prometheus

DASHBOARD = ROOT / "config" / "dashboard.json"

# What an operator must find on the dashboard (issue 6).
REQUIRED = {
    "govpipe:sink_identity_gap", "govpipe:source_identity_gap", "govpipe:fanout_identity_gap",
    "govpipe_sink_delivered_total", "govpipe_sink_failed_total", "govpipe_sink_dropped_total",
    "govpipe_sink_circuit_state", "govpipe_sink_in_flight", "govpipe_source_lag",
    "govpipe_deadletter_written_total", "govpipe_source_rejected_total",
}
_GRAFANA_VARS = {"$__rate_interval": "1m", "$job": ".*", "$instance": ".*"}


def load_dashboard() -> dict[str, Any]:
    document: dict[str, Any] = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    return document


def panel_exprs(dashboard: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """(panel title, PromQL) for every query target, plus the template variable queries."""
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            yield panel["title"], target["expr"]
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            match = re.fullmatch(r"label_values\((.*), *\w+\)", variable["query"]["query"])
            assert match, variable
            yield f"${variable['name']}", match.group(1)


def to_promql(expr: str) -> str:
    for variable, value in _GRAFANA_VARS.items():
        expr = expr.replace(variable, value)
    assert "$" not in expr, f"unknown Grafana variable in {expr!r}"
    return expr


def test_metric_name_extraction() -> None:
    assert metric_names('histogram_quantile(0.99, sum by (sink, le) (rate(a_bucket{x="y"}[5m])))'
                        ) == {"a_bucket"}
    assert metric_names("rec:rule{job=~\"$job\"} - on (job) b offset 5m or c > bool 2") == {
        "rec:rule", "b", "c"}
    assert metric_names('sum({__name__=~"x_total|y"}) or 0 * z') == {"x_total", "y", "z"}


def test_every_panel_uses_only_exported_metrics_and_recording_rules() -> None:
    known = exported_names() | set(recording_rules())
    used: set[str] = set()
    for title, expr in panel_exprs(load_dashboard()):
        names = metric_names(expr)
        assert names, f"{title}: no metric in {expr!r}"
        assert names <= known, f"{title}: unknown metric(s) {sorted(names - known)}"
        used |= names
    assert used >= REQUIRED, f"missing panels for {sorted(REQUIRED - used)}"


def test_dashboard_is_importable_with_a_prometheus_datasource_variable() -> None:
    dashboard = load_dashboard()
    assert 36 <= dashboard["schemaVersion"] <= 41
    assert dashboard["uid"]
    assert dashboard["title"]
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    panels = [p for p in dashboard["panels"] if p["type"] != "row"]
    assert len({p["id"] for p in dashboard["panels"]}) == len(dashboard["panels"])
    for panel in panels:
        uids = [panel["datasource"]["uid"]] + [t["datasource"]["uid"] for t in panel["targets"]]
        assert set(uids) == {"${datasource}"}, panel["title"]
        assert panel["targets"], panel["title"]
        assert panel["gridPos"]["x"] + panel["gridPos"]["w"] <= 24, panel["title"]


@pytest.mark.integration
async def test_every_panel_query_is_accepted_by_prometheus(prometheus: Prometheus) -> None:
    # QueryError (HTTP 400, with the parse error) if an expression is not valid PromQL.
    for _title, expr in panel_exprs(load_dashboard()):
        await prometheus.query(to_promql(expr))
