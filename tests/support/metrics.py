"""Reading metrics in tests: samples of a registry, of a /metrics scrape (text exposition
format), and counter rates between scrapes."""

from __future__ import annotations

import time
from collections.abc import Mapping
from itertools import pairwise

from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from tests.support.identities import registry_counts


def sample(registry: CollectorRegistry, name: str, **labels: str) -> float:
    """The value of one sample of `registry` (0 when absent)."""
    return registry.get_sample_value(name, labels or None) or 0.0


def sink_identity_gap(registry: CollectorRegistry, sink: str) -> int:
    """submitted - (delivered + Σfailed + Σdropped + in_flight) for one sink."""
    return registry_counts(registry).sinks[sink].gap()


def metric_value(text: str, name: str, **labels: str) -> float:
    """The sum of `name`'s samples whose labels include `labels` (0 when absent)."""
    total = 0.0
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                total += s.value
    return total


class RateWindows:
    """Per-window increments of counters, sampled from a process's /metrics."""

    def __init__(self) -> None:
        self.samples: list[tuple[float, dict[str, float]]] = []

    def add(self, values: Mapping[str, float]) -> None:
        self.samples.append((time.monotonic(), dict(values)))

    def rates(self, name: str, since: float, until: float) -> list[float]:
        """Events per second of `name` over each pair of consecutive samples in the span."""
        inside = [(t, v[name]) for t, v in self.samples if since <= t <= until]
        return [(b - a) / (tb - ta) for (ta, a), (tb, b) in pairwise(inside) if tb > ta]
