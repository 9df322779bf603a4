"""Where every record and event stands, and the three identities that must hold between
those counts at every instant (the reconciliation an operator alerts on):

1. per sink: submitted = delivered + Σfailed + Σdropped + in_flight
2. records = accepted + Σrejected + source_in_flight
3. Σ over sinks of submitted = accepted * number of sinks

The ledger keeps one `Counts`; `/metrics` renders it, the shutdown summary prints it, and
tests rebuild one from a scrape (`Counts.from_samples`) to check the same identities.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

# Prometheus names of the counts, as rendered on /metrics.
RECORDS = "govpipe_source_records_total"
REJECTED = "govpipe_source_rejected_total"
SOURCE_IN_FLIGHT = "govpipe_source_in_flight"
ACCEPTED = "govpipe_events_accepted_total"
SUBMITTED = "govpipe_sink_submitted_total"
DELIVERED = "govpipe_sink_delivered_total"
FAILED = "govpipe_sink_failed_total"
DROPPED = "govpipe_sink_dropped_total"
IN_FLIGHT = "govpipe_sink_in_flight"


@dataclass(slots=True)
class SinkCounts:
    """One sink's events: handed to it, and where each of them ended (or not yet)."""

    submitted: int = 0
    delivered: int = 0
    failed: Counter[str] = field(default_factory=Counter)   # by reason
    dropped: Counter[str] = field(default_factory=Counter)  # by reason
    in_flight: int = 0

    def gap(self) -> int:
        return self.submitted - (self.delivered + self.failed.total() + self.dropped.total()
                                 + self.in_flight)

    def summary(self) -> dict[str, int]:
        return {"delivered": self.delivered, "failed": self.failed.total(),
                "dropped": self.dropped.total()}


@dataclass(slots=True)
class Counts:
    """Records read and where they went; events per sink."""

    records: int = 0
    accepted: int = 0
    rejected: Counter[str] = field(default_factory=Counter)  # by reason
    source_in_flight: int = 0
    sinks: dict[str, SinkCounts] = field(default_factory=dict)

    def gaps(self) -> dict[str, int]:
        """Each identity's gap, 0 when it holds: "sink:<name>" per sink, "source", "fanout"."""
        gaps = {f"sink:{name}": sink.gap() for name, sink in self.sinks.items()}
        gaps["source"] = self.records - (self.accepted + self.rejected.total()
                                         + self.source_in_flight)
        gaps["fanout"] = (sum(sink.submitted for sink in self.sinks.values())
                          - self.accepted * len(self.sinks))
        return gaps

    def broken(self) -> dict[str, int]:
        """The identities that do not hold, with their gaps."""
        return {name: gap for name, gap in self.gaps().items() if gap}

    def summary(self) -> dict[str, Any]:
        """What was read and where every event ended (the shutdown log line)."""
        return {"source_records": self.records, "events_accepted": self.accepted,
                "rejected": self.rejected.total(),
                "sinks": {name: sink.summary() for name, sink in self.sinks.items()}}

    @classmethod
    def from_samples(cls, samples: Iterable[tuple[str, dict[str, str], float]]) -> Counts:
        """Counts rebuilt from scraped (name, labels, value) samples of one replica."""
        counts = cls()
        for name, labels, value in samples:
            _add_sample(counts, name, labels, int(value))
        return counts


_SOURCE_FIELDS = {RECORDS: "records", ACCEPTED: "accepted", SOURCE_IN_FLIGHT: "source_in_flight"}
_SINK_FIELDS = {SUBMITTED: "submitted", DELIVERED: "delivered", IN_FLIGHT: "in_flight"}
_SINK_REASONS = {FAILED: "failed", DROPPED: "dropped"}


def _add_sample(counts: Counts, name: str, labels: dict[str, str], value: int) -> None:
    reason = labels.get("reason", "")
    if field_name := _SOURCE_FIELDS.get(name):
        setattr(counts, field_name, getattr(counts, field_name) + value)
    elif name == REJECTED:
        counts.rejected[reason] += value
    elif name in _SINK_FIELDS or name in _SINK_REASONS:
        sink = counts.sinks.setdefault(labels.get("sink", ""), SinkCounts())
        if field_name := _SINK_FIELDS.get(name):
            setattr(sink, field_name, getattr(sink, field_name) + value)
        else:
            getattr(sink, _SINK_REASONS[name])[reason] += value
