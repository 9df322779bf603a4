"""The ledger: counts and settlement in one step, the identities as code, /metrics from it."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from prometheus_client import CollectorRegistry

from pipeline.delivery.counts import Counts
from pipeline.delivery.ledger import Ledger
from pipeline.model import Position, Record, Rejection, SignedEvent
from pipeline.sources.offsets import OutOfOrder


def event(offset: int) -> SignedEvent:
    return SignedEvent(id=f"e{offset}", attributes={}, body=b"{}",
                       position=Position("t", 0, offset))


def rejection(offset: int, reason: str = "invalid_json") -> Rejection:
    return Rejection(reason, "bad", Record(b"x", Position("t", 0, offset)))


@dataclass(frozen=True)
class Entry:
    origin: str
    position: Position


def scraped(registry: CollectorRegistry) -> Counts:
    return Counts.from_samples((s.name, s.labels, s.value)
                               for family in registry.collect() for s in family.samples)


def test_an_event_is_acknowledged_once_every_sink_has_settled_it() -> None:
    ledger = Ledger(CollectorRegistry(), ["a", "b"])
    events = [event(0), event(1)]
    ledger.ingest(events)
    for sink in ("a", "b"):
        ledger.submitted(sink, 2)
    ledger.delivered("a", events)
    assert ledger.tracker.committable() == {}
    ledger.dropped("b", events[:1], "queue_full")
    assert ledger.tracker.committable() == {("t", 0): 1}
    ledger.failed("b", events[1:], "timeout")
    assert ledger.tracker.committable() == {("t", 0): 1}  # not until its entry is written
    ledger.dead_lettered([Entry("b", events[1].position)])
    assert ledger.tracker.committable() == {("t", 0): 2}
    assert ledger.tracker.outstanding == 0
    assert ledger.counts.broken() == {}
    assert ledger.dead_letters == {"b": 1}


def test_a_rejection_is_acknowledged_by_its_dead_letter_entry() -> None:
    ledger = Ledger(CollectorRegistry(), ["a"])
    ledger.ingest([rejection(0)])
    assert ledger.counts.rejected == {"invalid_json": 1}
    assert ledger.tracker.outstanding == 1
    ledger.dead_lettered([Entry("source", Position("t", 0, 0))])
    assert ledger.tracker.committable() == {("t", 0): 1}
    assert ledger.counts.broken() == {}


def test_the_identities_hold_at_every_step_and_catch_a_miscount() -> None:
    ledger = Ledger(CollectorRegistry(), ["a", "b"])
    events = [event(n) for n in range(5)]
    ledger.ingest([*events, rejection(5)])
    assert ledger.counts.broken() == {"fanout": -10}  # accepted, not yet handed to sinks
    ledger.submitted("a", 5)
    ledger.submitted("b", 5)
    assert ledger.counts.broken() == {}
    ledger.delivered("a", events[:3])
    ledger.failed("b", events, "circuit_open")
    assert ledger.counts.broken() == {}
    ledger.counts.sinks["a"].delivered += 1  # what a path bypassing the ledger would do
    assert ledger.counts.broken() == {"sink:a": -1}


def test_metrics_render_the_ledger_and_reconcile_from_a_scrape() -> None:
    registry = CollectorRegistry()
    ledger = Ledger(registry, ["a"])
    events = [event(n) for n in range(4)]
    ledger.ingest([*events, rejection(4, "too_large")])
    ledger.submitted("a", 4)
    ledger.delivered("a", events[:2])
    ledger.dropped("a", events[2:3], "circuit_open")
    ledger.retried("a", 3)
    ledger.circuit_changed("a", "open")
    ledger.paused("sink_queue_full")
    value = registry.get_sample_value
    assert value("govpipe_source_records_total") == 5
    assert value("govpipe_source_rejected_total", {"reason": "too_large"}) == 1
    assert value("govpipe_sink_in_flight", {"sink": "a"}) == 1
    assert value("govpipe_sink_dropped_total", {"sink": "a", "reason": "circuit_open"}) == 1
    assert value("govpipe_sink_retries_total", {"sink": "a"}) == 3
    assert value("govpipe_sink_circuit_state", {"sink": "a"}) == 2
    assert value("govpipe_sink_circuit_transitions_total", {"sink": "a", "to": "open"}) == 1
    assert value("govpipe_source_paused_total", {"cause": "deadletter_backlog"}) == 0
    counts = scraped(registry)
    assert counts == ledger.counts
    assert counts.broken() == {}


def test_series_without_events_exist_from_the_start_except_by_reason() -> None:
    registry = CollectorRegistry()
    Ledger(registry, ["a"])
    names = {(s.name, tuple(sorted(s.labels.items())))
             for family in registry.collect() for s in family.samples}
    assert ("govpipe_sink_submitted_total", (("sink", "a"),)) in names
    assert ("govpipe_sink_in_flight", (("sink", "a"),)) in names
    assert ("govpipe_source_offset_gaps_total", ()) in names
    assert not any(name == "govpipe_sink_failed_total" for name, _ in names)


def test_a_rejection_before_an_event_never_lets_the_commit_pass_the_event() -> None:
    # Was: rejections were tracked before the batch's events, out of offset order; once the
    # rejection at 11 was dead-lettered, the commit point jumped past event 10, unsettled.
    ledger = Ledger(CollectorRegistry(), ["a"])
    ledger.ingest([event(10), rejection(11), event(12)])
    ledger.dead_lettered([Entry("source", Position("t", 0, 11))])
    assert ledger.tracker.committable() == {}
    ledger.submitted("a", 2)
    ledger.delivered("a", [event(10)])
    assert ledger.tracker.committable() == {("t", 0): 12}


def test_a_record_tracked_out_of_order_stops_the_pipeline() -> None:
    ledger = Ledger(CollectorRegistry(), ["a"])
    ledger.ingest([event(5)])
    with pytest.raises(OutOfOrder):
        ledger.ingest([event(5)])
