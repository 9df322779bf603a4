"""The reconciliation identities of SPEC §5, computed from one Prometheus text scrape."""

from __future__ import annotations

from collections import defaultdict

from prometheus_client.parser import text_string_to_metric_families

_SETTLED = ("govpipe_sink_delivered_total", "govpipe_sink_failed_total",
            "govpipe_sink_dropped_total", "govpipe_sink_in_flight")


def identity_gaps(text: str) -> dict[str, float]:
    """Each identity's gap (0 when it holds): one per sink, plus "source" and "fanout"."""
    totals: dict[str, float] = defaultdict(float)
    per_sink: dict[str, float] = defaultdict(float)
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            totals[s.name] += s.value
            sink = s.labels.get("sink")
            if sink is None:
                continue
            if s.name == "govpipe_sink_submitted_total":
                per_sink[sink] += s.value
            elif s.name in _SETTLED:
                per_sink[sink] -= s.value
    gaps = {f"sink:{sink}": gap for sink, gap in per_sink.items()}
    gaps["source"] = totals["govpipe_source_records_total"] - (
        totals["govpipe_events_accepted_total"] + totals["govpipe_source_rejected_total"]
        + totals["govpipe_source_in_flight"])
    gaps["fanout"] = totals["govpipe_sink_submitted_total"] - len(per_sink) * totals[
        "govpipe_events_accepted_total"]
    return gaps


def assert_reconciled(text: str) -> None:
    gaps = identity_gaps(text)
    assert all(gap == 0 for gap in gaps.values()), gaps
