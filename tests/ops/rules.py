"""Reads config/alerts.yml, so the tests use the very expressions Prometheus evaluates."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).parents[2]
ALERTS_YML = ROOT / "config" / "alerts.yml"
UNIT_TESTS_YML = Path(__file__).with_name("alerts_test.yml")

# The alerts SPEC §5 names; alerts.yml must define exactly these.
SPEC_ALERTS = frozenset({
    "GovpipeReconciliationBroken", "GovpipeSinkFailing", "GovpipeEventsDropped",
    "GovpipeEventsRejected", "GovpipeCircuitOpen", "GovpipeInFlightStuck",
    "GovpipeSourceLagGrowing", "GovpipeDeadLetterErrors",
})


def load_rules(path: Path = ALERTS_YML) -> list[dict[str, Any]]:
    """Every rule of every group, in file order."""
    document = yaml.safe_load(path.read_text(encoding="utf-8"))
    return [rule for group in document["groups"] for rule in group["rules"]]


def alert_rules() -> list[dict[str, Any]]:
    """The alerting rules (one alert name may have several rules)."""
    return [rule for rule in load_rules() if "alert" in rule]


def recording_rules() -> dict[str, str]:
    """Recorded series name → the PromQL expression that computes it."""
    return {rule["record"]: rule["expr"] for rule in load_rules() if "record" in rule}
