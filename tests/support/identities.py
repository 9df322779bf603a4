"""The three accounting identities, checked on a Prometheus text scrape with the product's
own code (`pipeline.delivery.counts`): the counts are rebuilt from the scrape's samples."""

from __future__ import annotations

from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from pipeline.delivery.counts import Counts


def scraped_counts(text: str) -> Counts:
    return Counts.from_samples((s.name, s.labels, s.value)
                               for family in text_string_to_metric_families(text)
                               for s in family.samples)


def registry_counts(registry: CollectorRegistry) -> Counts:
    return Counts.from_samples((s.name, s.labels, s.value)
                               for family in registry.collect() for s in family.samples)


def identity_gaps(text: str) -> dict[str, int]:
    """Each identity's gap (0 when it holds): one per sink, plus "source" and "fanout"."""
    return scraped_counts(text).gaps()


def assert_reconciled(text: str) -> None:
    gaps = identity_gaps(text)
    assert all(gap == 0 for gap in gaps.values()), gaps
