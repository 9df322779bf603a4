"""The Prometheus metrics of SPEC §5, on an injected registry.

Every update happens on the event loop, and `/metrics` renders on the event loop without
awaiting, so each scrape is one consistent snapshot: the identities hold in every scrape.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

CIRCUIT_STATE_VALUES = {"closed": 0, "half_open": 1, "open": 2}
INBOUND_RESULTS = ("ok", "unsigned", "bad_signature", "expired", "replay", "nonce_capacity")
ALERT_SEVERITIES = ("high", "medium")
PAUSE_CAUSES = ("sink_queue_full", "deadletter_backlog")


class Metrics:
    """All govpipe metrics; counters count events, never batches."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        r = registry
        self.source_records = Counter(
            "govpipe_source_records", "Records read from the source.", registry=r)
        self.source_rejected = Counter(
            "govpipe_source_rejected", "Records rejected, by reason.", ["reason"], registry=r)
        self.source_in_flight = Gauge(
            "govpipe_source_in_flight", "Records read, not yet accepted or rejected.", registry=r)
        self.events_accepted = Counter(
            "govpipe_events_accepted", "Records turned into signed events.", registry=r)
        self.sink_submitted = Counter(
            "govpipe_sink_submitted", "Events handed to a sink.", ["sink"], registry=r)
        self.sink_delivered = Counter(
            "govpipe_sink_delivered", "Events a sink delivered.", ["sink"], registry=r)
        self.sink_failed = Counter(
            "govpipe_sink_failed", "Events a sink failed to deliver.", ["sink", "reason"],
            registry=r)
        self.sink_dropped = Counter(
            "govpipe_sink_dropped", "Events dropped by policy.", ["sink", "reason"], registry=r)
        self.sink_in_flight = Gauge(
            "govpipe_sink_in_flight", "Events submitted to a sink, not yet settled.", ["sink"],
            registry=r)
        self.sink_retries = Counter(
            "govpipe_sink_retries", "Events sent again after a retriable failure.", ["sink"],
            registry=r)
        self.sink_circuit_state = Gauge(
            "govpipe_sink_circuit_state", "Breaker state: 0 closed, 1 half-open, 2 open.",
            ["sink"], registry=r)
        self.sink_circuit_transitions = Counter(
            "govpipe_sink_circuit_transitions", "Breaker transitions, by target state.",
            ["sink", "to"], registry=r)
        self.sink_send_seconds = Histogram(
            "govpipe_sink_send_seconds", "Time to send one batch.", ["sink"], registry=r)
        self.deadletter_written = Counter(
            "govpipe_deadletter_written", "Entries written to the dead-letter destination.",
            ["origin"], registry=r)
        self.deadletter_errors = Counter(
            "govpipe_deadletter_errors", "Failed dead-letter writes.", registry=r)
        self.deadletter_pending = Gauge(
            "govpipe_deadletter_pending", "Entries waiting to be written to the dead-letter "
            "destination.", registry=r)
        self.source_paused = Counter(
            "govpipe_source_paused", "Times reading stopped for back-pressure, by cause "
            "(a sink's queue full, or the dead-letter backlog full).", ["cause"], registry=r)
        for cause in PAUSE_CAUSES:
            self.source_paused.labels(cause)
        self.source_offset_gaps = Counter(
            "govpipe_source_offset_gaps", "Offsets the consumer skipped without handing their "
            "records on (a bug; the records were read again; the log names the partition).",
            registry=r)
        self.source_lag = Gauge(
            "govpipe_source_lag", "Records behind the partition end.", ["partition"], registry=r)
        self.inbound_verification = Counter(
            "govpipe_inbound_verification", "Producer signature checks, by result.",
            ["result"], registry=r)
        for result in INBOUND_RESULTS:
            self.inbound_verification.labels(result)
        self.poisoning_alerts = Counter(
            "govpipe_poisoning_alerts", "Tool-poisoning findings, by severity.", ["severity"],
            registry=r)
        for severity in ALERT_SEVERITIES:
            self.poisoning_alerts.labels(severity)

    def register_sink(self, sink: str) -> None:
        """Create a sink's series at zero so absent series never hide a problem."""
        self.sink_submitted.labels(sink)
        self.sink_delivered.labels(sink)
        self.sink_in_flight.labels(sink).set(0)
        self.sink_retries.labels(sink)
        self.sink_circuit_state.labels(sink).set(0)
