"""Producer-side counters, by topic, on the agent's Prometheus registry.

Read at scrape time from each publisher's spool (one consistent snapshot) and sender:

- `govpipe_publisher_spooled_total` events accepted into the spool; `…_recovered_total`
  events found unacknowledged in the spool at start-up (sent again);
  `…_acknowledged_total` events the broker acknowledged (removed from the spool);
  `…_rejected_total{reason}` events Kafka refused for good (`record_too_large`,
  `invalid_record`), set aside in the spool directory's `rejected.jsonl` and removed from
  the spool; `…_spool_entries` what is still waiting. In every scrape:
  recovered + spooled = acknowledged + Σ rejected + spool_entries.
- `govpipe_publisher_refused_total{reason}` events refused (never spooled, the caller told).
- `govpipe_publisher_sent_total` records handed to the producer, `…_resent_total` the part
  of them sent again (after a failure or no acknowledgement in time: possible duplicates),
  `…_producer_replaced_total{reason}`.
- `govpipe_publisher_spool_bytes`, `govpipe_publisher_oldest_unsent_age_seconds`.

Against the daemon reading the topic (alone), once the spools are empty:
Σ acknowledged ≤ `govpipe_source_records_total` ≤ Σ acknowledged + Σ resent.
"""

from __future__ import annotations

import operator
import threading
import weakref
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TypeVar

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from pipeline.publisher.spool import Spool, SpoolCounts

__all__ = ["PublisherStats", "attach_metrics", "register_publisher_metrics"]

F = TypeVar("F", CounterMetricFamily, GaugeMetricFamily)


@dataclass
class PublisherStats:
    """What one publisher counts outside its spool; thread-safe."""

    refused: Counter[str] = field(default_factory=Counter)
    replaced: Counter[str] = field(default_factory=Counter)
    sent: int = 0
    resent: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def count_refused(self, reason: str, events: int) -> None:
        """`events` refused for `reason`."""
        with self._lock:
            self.refused[reason] += events

    def count_sent(self, records: int, *, again: bool) -> None:
        """`records` handed to the producer (`again`: after a failed attempt)."""
        with self._lock:
            self.sent += records
            if again:
                self.resent += records

    def count_replaced(self, reason: str) -> None:
        """The producer was replaced."""
        with self._lock:
            self.replaced[reason] += 1


@dataclass(frozen=True)
class _Source:
    topic: str
    spool: Spool
    stats: PublisherStats
    clock_ms: Callable[[], int]


class _PublisherCollector(Collector):
    """Every attached publisher's series, summed by topic, rendered at scrape time."""

    def __init__(self) -> None:
        self._sources: list[_Source] = []
        self._lock = threading.Lock()

    def add(self, source: _Source) -> None:
        with self._lock:
            self._sources.append(source)

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        with self._lock:
            sources = list(self._sources)
        views = [(s, s.spool.counts()) for s in sources]
        yield from _families(views)


def _families(views: list[tuple[_Source, SpoolCounts]]) -> Iterable[CounterMetricFamily |
                                                                     GaugeMetricFamily]:
    def counter(name: str, text: str, value: Callable[[_Source, SpoolCounts], float]
                ) -> CounterMetricFamily:
        return _by_topic(CounterMetricFamily(name, text, labels=["topic"]), views, value)

    def gauge(name: str, text: str, value: Callable[[_Source, SpoolCounts], float],
              combine: Callable[[float, float], float] = operator.add) -> GaugeMetricFamily:
        return _by_topic(GaugeMetricFamily(name, text, labels=["topic"]), views, value,
                         combine)

    yield counter("govpipe_publisher_recovered", "Events found unacknowledged in the spool "
                  "at start-up (sent again).", lambda s, c: c.recovered)
    yield counter("govpipe_publisher_spooled", "Events accepted into the spool.",
                  lambda s, c: c.spooled)
    yield counter("govpipe_publisher_acknowledged", "Events the broker acknowledged "
                  "(removed from the spool).", lambda s, c: c.acknowledged)
    yield counter("govpipe_publisher_sent", "Records handed to the Kafka producer.",
                  lambda s, c: s.stats.sent)
    yield counter("govpipe_publisher_resent", "Records sent again after a failure or no "
                  "acknowledgement in time (possible duplicates by event id).",
                  lambda s, c: s.stats.resent)
    yield gauge("govpipe_publisher_spool_entries", "Events in the spool, not yet "
                "acknowledged.", lambda s, c: c.entries)
    yield gauge("govpipe_publisher_spool_bytes", "Bytes of the spool not yet acknowledged.",
                lambda s, c: c.bytes)
    yield gauge("govpipe_publisher_oldest_unsent_age_seconds", "Age of the oldest event "
                "not yet acknowledged (0 when the spool is empty).", _oldest_age_s, max)
    yield _labelled("govpipe_publisher_refused", "Events refused, never spooled, by reason.",
                    "reason", views, lambda s, c: s.stats.refused)
    yield _labelled("govpipe_publisher_rejected", "Events Kafka refused for good, set aside "
                    "in rejected.jsonl and removed from the spool, by reason.", "reason",
                    views, lambda s, c: c.rejected)
    yield _labelled("govpipe_publisher_producer_replaced", "Kafka producers replaced, by "
                    "reason.", "reason", views, lambda s, c: s.stats.replaced)


def _oldest_age_s(source: _Source, counts: SpoolCounts) -> float:
    if counts.oldest_spooled_at_ms is None:
        return 0.0
    return max(0.0, (source.clock_ms() - counts.oldest_spooled_at_ms) / 1000)


def _by_topic(family: F, views: list[tuple[_Source, SpoolCounts]],
              value: Callable[[_Source, SpoolCounts], float],
              combine: Callable[[float, float], float] = operator.add) -> F:
    totals: dict[str, float] = {}
    for source, counts in views:
        here = value(source, counts)
        totals[source.topic] = combine(totals[source.topic], here) \
            if source.topic in totals else here
    for topic, total in totals.items():
        family.add_metric([topic], total)
    return family


def _labelled(name: str, text: str, label: str, views: list[tuple[_Source, SpoolCounts]],
              counts: Callable[[_Source, SpoolCounts], Mapping[str, int]]
              ) -> CounterMetricFamily:
    family = CounterMetricFamily(name, text, labels=["topic", label])
    totals: Counter[tuple[str, str]] = Counter()
    for source, spool_counts in views:
        for key, n in counts(source, spool_counts).items():
            totals[(source.topic, key)] += n
    for (topic, key), n in totals.items():
        family.add_metric([topic, key], n)
    return family


_COLLECTORS: weakref.WeakKeyDictionary[CollectorRegistry, _PublisherCollector] = (
    weakref.WeakKeyDictionary())
_COLLECTORS_LOCK = threading.Lock()


def attach_metrics(registry: CollectorRegistry, topic: str, spool: Spool,
                   stats: PublisherStats, clock_ms: Callable[[], int]) -> None:
    """Expose one publisher's series on `registry`, for the life of the registry (a closed
    publisher's counters stay readable, like Agent OS's processor counters). Several
    publishers may share a registry: their series add up by topic."""
    register_publisher_metrics(registry).add(_Source(topic, spool, stats, clock_ms))


def register_publisher_metrics(registry: CollectorRegistry) -> _PublisherCollector:
    """The `govpipe_publisher_*` families on `registry` (registered once per registry)."""
    with _COLLECTORS_LOCK:
        collector = _COLLECTORS.get(registry)
        if collector is None:
            collector = _COLLECTORS[registry] = _PublisherCollector()
            registry.register(collector)
    return collector
