"""Reads config/alerts.yml (so tests use the very expressions Prometheus evaluates) and
finds the metric names a PromQL expression uses, to check them against govpipe's registry."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml
from prometheus_client import CollectorRegistry

from pipeline.delivery.ledger import Ledger
from pipeline.ops.metrics import Metrics
from pipeline.publisher.metrics import register_publisher_metrics

ROOT = Path(__file__).parents[2]
ALERTS_YML = ROOT / "config" / "alerts.yml"
UNIT_TESTS_YML = Path(__file__).with_name("alerts_test.yml")

# The alerts an operator is promised; alerts.yml must define exactly these.
SPEC_ALERTS = frozenset({
    "GovpipeReconciliationBroken", "GovpipeSinkFailing", "GovpipeEventsDropped",
    "GovpipeEventsRejected", "GovpipeCircuitOpen", "GovpipeInFlightStuck",
    "GovpipeSourceLagGrowing", "GovpipeDeadLetterErrors", "GovpipeOffsetGap",
    "GovpipeDeadLetterFull",
    "GovpipePublisherSpoolGrowing", "GovpipePublisherRefusing",
})
_SUFFIXES = {"counter": ("_total", "_created"), "gauge": ("",),
             "histogram": ("_bucket", "_count", "_sum", "_created")}
_KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "offset",
             "and", "or", "unless", "inf", "nan"}


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


def exported_names() -> set[str]:
    """Every series name govpipe's registry can expose, including never-incremented ones."""
    registry = CollectorRegistry()
    Metrics(registry)
    Ledger(registry, ["stdout"])
    register_publisher_metrics(registry)  # an agent's registry, with govpipe's publisher
    return {family.name + suffix for family in registry.collect()
            for suffix in _SUFFIXES[family.type]}


def metric_names(expr: str) -> set[str]:
    """Series names an expression selects: identifiers that are not functions, keywords,
    label names, label values or durations, plus the alternatives of `__name__=~"a|b"`."""
    by_regex = {name for alternatives in re.findall(r'__name__=~"([^"]*)"', expr)
                for name in alternatives.split("|")}
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)                 # string literals
    text = re.sub(r"\{[^}]*\}", "", text)                            # label matchers
    text = re.sub(r"\[[^\]]*\]", "", text)                           # ranges, subqueries
    text = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", text)
    names = re.findall(r"(?<![\w:.$])([a-zA-Z_:][\w:]*)\b(?!\s*\()", text)
    return by_regex | {name for name in names if name.lower() not in _KEYWORDS}
