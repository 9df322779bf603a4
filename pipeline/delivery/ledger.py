"""The ledger: the one place where records and events are counted and settled.

Every record read ends in exactly one place: accepted (then, per sink, delivered, failed
and dead-lettered, or dropped by policy) or rejected (and dead-lettered). Each change is
one synchronous call here that updates the counts and settles the source position in the
same step, so a scrape of `/metrics` (rendered from these counts, on the event loop) sees
every identity of `Counts` hold. An event's acknowledgement handle is its `Position`: when
every part of it has settled (one per sink, or one dead-letter write), the `OffsetTracker`
lets the source commit past it.

Exactly-once into Kafka (`pipeline.exactly_once`) splits a Kafka-bound part in two: staged
(settled here at once, so the commit point can move past it) and committed (counted
delivered, or written for a dead-letter entry, only when the transaction that writes it
with its offset commits). A transaction that aborts is tried again with the same records,
so nothing is counted twice; events staged for a partition given up before its
transaction committed are counted dropped (`partition_revoked`): its next owner delivers
them (`transaction_outcome_unknown` when a transaction that wrote them may have
committed: see `pipeline.exactly_once.tally`).

Only this module changes the `govpipe_source_*`, `govpipe_events_*` and `govpipe_sink_*`
series; `/metrics` renders them from the ledger when scraped.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection, Iterator, Sequence
from typing import Protocol

from prometheus_client import CollectorRegistry, Histogram, disable_created_metrics
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from pipeline.delivery.counts import Counts, SinkCounts
from pipeline.model import Position, Rejection, SignedEvent
from pipeline.sources.offsets import OffsetTracker

# No `<counter>_created` series anywhere: the ledger's series (rendered from its counts)
# have none, and one scrape should not show them for some counters and not others.
disable_created_metrics()  # type: ignore[no-untyped-call]

CIRCUIT_STATE_VALUES = {"closed": 0, "half_open": 1, "open": 2}
PAUSE_CAUSES = ("sink_queue_full", "deadletter_backlog", "deadletter_full")


class Settled(Protocol):
    """A dead-letter entry, as far as the ledger cares: whose it was and where it came from."""

    @property
    def origin(self) -> str: ...

    @property
    def position(self) -> Position: ...


class Ledger:
    """Counts and settles; `counts` is the live state, `tracker` the acknowledgements."""

    def __init__(self, registry: CollectorRegistry, sinks: Sequence[str],
                 tracker: OffsetTracker | None = None, *, staging: Collection[str] = (),
                 deadletters_staged: bool = False) -> None:
        """`staging`: sinks whose `delivered` means staged for a transaction (counted at
        `committed`); `deadletters_staged`: dead-letter writes are staged the same way."""
        self._staging = frozenset(staging)
        self._deadletters_staged = deadletters_staged
        self.counts = Counts(sinks={name: SinkCounts() for name in sinks})
        self.tracker = tracker if tracker is not None else OffsetTracker()
        self._parts = len(sinks)
        self.retries: Counter[str] = Counter({name: 0 for name in sinks})
        self.circuit_state = dict.fromkeys(sinks, 0)
        self.transitions: Counter[tuple[str, str]] = Counter()
        self.lags: dict[str, int] = {}
        self.pauses: Counter[str] = Counter(dict.fromkeys(PAUSE_CAUSES, 0))
        self.offset_gaps = 0
        self.dead_letters: Counter[str] = Counter()  # written, by origin
        self._send_seconds = Histogram(
            "govpipe_sink_send_seconds", "Time to send one batch.", ["sink"], registry=registry)
        self._send_by_sink = {name: self._send_seconds.labels(name) for name in sinks}
        registry.register(_LedgerCollector(self))

    @property
    def sinks(self) -> list[str]:
        return list(self.counts.sinks)

    # -- the source side

    def ingest(self, results: Sequence[SignedEvent | Rejection]
               ) -> tuple[list[SignedEvent], list[Rejection]]:
        """One batch read: each record became an accepted event (one part to settle per
        sink) or a rejection (one part: its dead-letter entry). Tracked in the order read,
        which is offset order: the commit point must never pass an earlier record.
        Returns the events and the rejections."""
        counts, track, parts = self.counts, self.tracker.track, self._parts
        accepted: list[SignedEvent] = []
        rejected: list[Rejection] = []
        for result in results:
            if isinstance(result, Rejection):
                counts.rejected[result.reason] += 1
                track(result.record.position, 1)
                rejected.append(result)
            else:
                track(result.position, parts)
                accepted.append(result)
        counts.records += len(results)
        counts.accepted += len(accepted)
        return accepted, rejected

    # -- the sink side

    def submitted(self, sink: str, count: int) -> None:
        entry = self.counts.sinks[sink]
        entry.submitted += count
        entry.in_flight += count

    def delivered(self, sink: str, events: Sequence[SignedEvent]) -> None:
        if sink in self._staging:  # counted when their transaction commits
            self._settle(events)
            return
        entry = self.counts.sinks[sink]
        entry.delivered += len(events)
        entry.in_flight -= len(events)
        self._settle(events)

    def dropped(self, sink: str, events: Sequence[SignedEvent], reason: str) -> None:
        """Discarded by an explicit policy: settled, and nowhere else."""
        entry = self.counts.sinks[sink]
        entry.dropped[reason] += len(events)
        entry.in_flight -= len(events)
        self._settle(events)

    def failed(self, sink: str, events: Sequence[SignedEvent], reason: str) -> None:
        """Given up on: settled only once each event's dead-letter entry is written."""
        entry = self.counts.sinks[sink]
        entry.failed[reason] += len(events)
        entry.in_flight -= len(events)

    def dead_lettered(self, entries: Sequence[Settled]) -> None:
        """Entries durably written (or staged): each settles its record's part."""
        settle = self.tracker.settle
        for item in entries:
            if not self._deadletters_staged:
                self.dead_letters[item.origin] += 1
            settle(item.position)

    def committed(self, sink: str, events: Sequence[SignedEvent]) -> None:
        """A transaction committed: `sink`'s staged `events` are delivered (their parts
        settled when they were staged)."""
        entry = self.counts.sinks[sink]
        entry.delivered += len(events)
        entry.in_flight -= len(events)

    def entries_committed(self, origins: Sequence[str]) -> None:
        """A transaction committed staged dead-letter entries, one per item of `origins`."""
        self.dead_letters.update(origins)

    def uncommitted(self, sink: str, events: Sequence[SignedEvent], reason: str) -> None:
        """Staged events no transaction of this process will write (their partition went
        to another owner, or another owner committed past them): dropped, already settled."""
        entry = self.counts.sinks[sink]
        entry.dropped[reason] += len(events)
        entry.in_flight -= len(events)

    def _settle(self, events: Sequence[SignedEvent]) -> None:
        settle = self.tracker.settle
        for event in events:
            settle(event.position)

    # -- how the sinks and the source are doing

    def retried(self, sink: str, count: int) -> None:
        self.retries[sink] += count

    def circuit_changed(self, sink: str, to: str) -> None:
        self.circuit_state[sink] = CIRCUIT_STATE_VALUES[to]
        self.transitions[sink, to] += 1

    def sent(self, sink: str, seconds: float) -> None:
        self._send_by_sink[sink].observe(seconds)

    def lag(self, partition: int, records: int) -> None:
        self.lags[str(partition)] = records

    def paused(self, cause: str) -> None:
        self.pauses[cause] += 1

    def offset_gap(self) -> None:
        self.offset_gaps += 1


class _LedgerCollector:
    """Renders the ledger's counts when `/metrics` is scraped (on the event loop)."""

    def __init__(self, ledger: Ledger) -> None:
        self._ledger = ledger

    def describe(self) -> Iterator[Metric]:
        return self.collect()

    def collect(self) -> Iterator[Metric]:
        yield from _source_families(self._ledger)
        yield from _sink_families(self._ledger)
        yield from _health_families(self._ledger)


def _counter(name: str, documentation: str, labels: Sequence[str],
             values: dict[tuple[str, ...], int] | None = None) -> CounterMetricFamily:
    family = CounterMetricFamily(name, documentation, labels=labels)
    for key, value in (values or {}).items():
        family.add_metric(list(key), value)
    return family


def _gauge(name: str, documentation: str, labels: Sequence[str],
           values: dict[tuple[str, ...], int]) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, documentation, labels=labels)
    for key, value in values.items():
        family.add_metric(list(key), value)
    return family


def _source_families(ledger: Ledger) -> Iterator[Metric]:
    counts = ledger.counts
    yield _counter("govpipe_source_records", "Records read from the source.", [],
                   {(): counts.records})
    yield _counter("govpipe_source_rejected", "Records rejected, by reason.", ["reason"],
                   {(reason,): n for reason, n in counts.rejected.items()})
    yield _gauge("govpipe_source_in_flight", "Records read, not yet accepted or rejected.", [],
                 {(): counts.source_in_flight})
    yield _counter("govpipe_events_accepted", "Records turned into signed events.", [],
                   {(): counts.accepted})
    yield _gauge("govpipe_source_lag", "Records behind the partition end.", ["partition"],
                 {(partition,): n for partition, n in ledger.lags.items()})
    yield _counter("govpipe_source_paused", "Times reading stopped for back-pressure, by cause "
                   "(a sink's queue full, or the dead-letter backlog full).", ["cause"],
                   {(cause,): n for cause, n in ledger.pauses.items()})
    yield _counter("govpipe_source_offset_gaps", "Offsets the consumer skipped without "
                   "handing their records on, one per gap (a bug; the records were read "
                   "again; the log names the partition and offsets).", [],
                   {(): ledger.offset_gaps})


def _sink_families(ledger: Ledger) -> Iterator[Metric]:
    sinks = ledger.counts.sinks
    yield _counter("govpipe_sink_submitted", "Events handed to a sink.", ["sink"],
                   {(name,): s.submitted for name, s in sinks.items()})
    yield _counter("govpipe_sink_delivered", "Events a sink delivered.", ["sink"],
                   {(name,): s.delivered for name, s in sinks.items()})
    yield _counter("govpipe_sink_failed", "Events a sink failed to deliver.", ["sink", "reason"],
                   {(name, reason): n for name, s in sinks.items()
                    for reason, n in s.failed.items()})
    yield _counter("govpipe_sink_dropped", "Events dropped by policy.", ["sink", "reason"],
                   {(name, reason): n for name, s in sinks.items()
                    for reason, n in s.dropped.items()})
    yield _gauge("govpipe_sink_in_flight", "Events submitted to a sink, not yet settled.",
                 ["sink"], {(name,): s.in_flight for name, s in sinks.items()})


def _health_families(ledger: Ledger) -> Iterator[Metric]:
    yield _counter("govpipe_sink_retries", "Events sent again after a retriable failure.",
                   ["sink"], {(name,): n for name, n in ledger.retries.items()})
    yield _gauge("govpipe_sink_circuit_state", "Breaker state: 0 closed, 1 half-open, 2 open.",
                 ["sink"], {(name,): n for name, n in ledger.circuit_state.items()})
    yield _counter("govpipe_sink_circuit_transitions", "Breaker transitions, by target state.",
                   ["sink", "to"], {key: n for key, n in ledger.transitions.items()})
    yield _counter("govpipe_deadletter_written", "Entries written to the dead-letter "
                   "destination.", ["origin"],
                   {(origin,): n for origin, n in ledger.dead_letters.items()})
