"""The Prometheus metrics that are not the ledger's, on an injected registry.

The source, event and sink series (and the dead-letter entries written) are rendered from
the ledger (`pipeline.delivery.ledger`); these are the rest: dead-letter write trouble,
producer-signature checks and tool-poisoning findings. Every update happens on the event
loop, and `/metrics` renders on the event loop without awaiting, so each scrape is one
consistent snapshot.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge

INBOUND_RESULTS = ("ok", "unsigned", "bad_signature", "expired", "replay", "nonce_capacity",
                   "sender_capacity")
ALERT_SEVERITIES = ("high", "medium")


class Metrics:
    """govpipe's metrics outside the ledger; counters count events, never batches."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        r = registry
        self.deadletter_errors = Counter(
            "govpipe_deadletter_errors", "Failed dead-letter writes.", registry=r)
        self.deadletter_pending = Gauge(
            "govpipe_deadletter_pending", "Entries waiting to be written to the dead-letter "
            "destination.", registry=r)
        self.deadletter_full = Gauge(
            "govpipe_deadletter_full", "1 while the dead-letter files are at "
            "deadletter.max_bytes and the source has stopped reading, else 0.", registry=r)
        self.deadletter_cap_reached = Counter(
            "govpipe_deadletter_cap_reached", "Times the dead-letter files reached "
            "deadletter.max_bytes (each stopped the source until room was made).",
            registry=r)
        self.inbound_verification = Counter(
            "govpipe_inbound_verification", "Producer signature checks, by result.",
            ["result"], registry=r)
        for result in INBOUND_RESULTS:
            self.inbound_verification.labels(result)
        self.inbound_nonces = Gauge(
            "govpipe_inbound_nonces", "Producer nonces remembered inside the replay window "
            "(at most source.nonce_capacity).", registry=r)
        self.poisoning_alerts = Counter(
            "govpipe_poisoning_alerts", "Tool-poisoning findings, by severity.", ["severity"],
            registry=r)
        for severity in ALERT_SEVERITIES:
            self.poisoning_alerts.labels(severity)
