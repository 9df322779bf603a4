"""config/alerts.yml checked by promtool: the rules load without lint findings, the unit
tests in alerts_test.yml pass, and every alert has a firing and a quiet test case."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from typing import Any

import yaml
from prometheus_client import CollectorRegistry

from pipeline.delivery.ledger import Ledger
from pipeline.ops.metrics import Metrics
from pipeline.publisher.metrics import register_publisher_metrics
from tests.ops.rules import (
    ALERTS_YML,
    ROOT,
    SPEC_ALERTS,
    UNIT_TESTS_YML,
    alert_rules,
    exported_names,
    load_rules,
    metric_names,
    recording_rules,
)

# Alerts whose series keep a `sink` label: their summary must name it.
PER_SINK_ALERTS = frozenset({
    "GovpipeSinkFailing", "GovpipeEventsDropped", "GovpipeCircuitOpen", "GovpipeInFlightStuck",
})


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    path = shutil.which("promtool")
    assert path, "promtool not found: install the Debian package prometheus (scripts/test does)"
    return subprocess.run([path, *args], capture_output=True, text=True, timeout=120,
                          check=False)


def test_promtool_check_rules_passes_with_lint() -> None:
    done = promtool("check", "rules", "--lint=all", "--lint-fatal", str(ALERTS_YML))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


def test_promtool_unit_tests_pass() -> None:
    done = promtool("test", "rules", str(UNIT_TESTS_YML))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout
    assert "FAILED" not in done.stdout + done.stderr


def alert_cases() -> Iterator[tuple[str, bool]]:
    """(alert name, fires?) for every alert_rule_test case of the unit tests."""
    document: dict[str, Any] = yaml.safe_load(UNIT_TESTS_YML.read_text(encoding="utf-8"))
    for group in document["tests"]:
        for case in group.get("alert_rule_test", []):
            yield case["alertname"], bool(case.get("exp_alerts"))


def test_alerts_yml_defines_exactly_the_spec_alerts() -> None:
    assert {rule["alert"] for rule in alert_rules()} == SPEC_ALERTS


def test_every_alert_has_a_firing_and_a_quiet_unit_test() -> None:
    cases = list(alert_cases())
    assert {name for name, fires in cases if fires} == SPEC_ALERTS
    assert {name for name, fires in cases if not fires} == SPEC_ALERTS


def test_every_alert_has_severity_summary_and_runbook() -> None:
    for rule in alert_rules():
        name, summary = rule["alert"], rule["annotations"]["summary"]
        assert rule["labels"]["severity"] in {"page", "ticket"}, name
        assert rule["annotations"]["runbook"].startswith(f"README.md#operations {name}:")
        if name in PER_SINK_ALERTS or rule["labels"].get("identity") == "sink":
            assert "{{ $labels.sink }}" in summary, name
        else:  # no sink label to name: the summary says which sinks are concerned
            assert "sink" in summary, name


def test_reconciliation_alert_covers_the_three_identities() -> None:
    broken = [rule for rule in alert_rules() if rule["alert"] == "GovpipeReconciliationBroken"]
    assert sorted(rule["labels"]["identity"] for rule in broken) == ["fanout", "sink", "source"]
    assert all(rule["for"] == "1m" and rule["expr"].endswith("_identity_gap != 0")
               for rule in broken)


def test_rules_use_only_metrics_govpipe_exports() -> None:
    known = exported_names() | set(recording_rules())
    for rule in load_rules():
        names = metric_names(rule["expr"])
        assert names, rule
        assert names <= known, (rule.get("record") or rule.get("alert"), names - known)


def test_readme_operations_section_documents_every_alert_and_metric() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("\n## Operations\n", 1)[1].split("\n## ", 1)[0]
    registry = CollectorRegistry()
    Metrics(registry)
    Ledger(registry, ["stdout"])
    register_publisher_metrics(registry)
    main_name = {"counter": "{}_total", "gauge": "{}", "histogram": "{}"}
    for family in registry.collect():
        assert f"`{main_name[family.type].format(family.name)}`" in section, family.name
    for name in SPEC_ALERTS | set(recording_rules()):
        assert f"`{name}`" in section, name
