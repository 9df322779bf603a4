"""Fakes for unit tests of pipeline logic (the real services are in tests/integration)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from prometheus_client import CollectorRegistry

from pipeline.model import Position, SignedEvent
from sinks.base import SinkError


class FlakySink:
    """Fails its first `failures` sends with `error`, then delivers; can be held on a gate."""

    def __init__(self, name: str = "flaky", failures: int = 0,
                 error: SinkError | None = None) -> None:
        self.name = name
        self.failures = failures
        self.error = error or SinkError("temporarily down", retriable=True, reason="timeout")
        self.attempts = 0
        self.delivered: list[SignedEvent] = []
        self.gate: asyncio.Event | None = None

    async def send(self, batch: Sequence[SignedEvent]) -> None:
        if self.gate is not None:
            await self.gate.wait()
        self.attempts += 1
        if self.attempts <= self.failures:
            raise self.error
        self.delivered.extend(batch)

    async def aclose(self) -> None:
        return None


def make_event(offset: int) -> SignedEvent:
    return SignedEvent(id=f"e{offset}", attributes={"id": f"e{offset}"},
                       body=b'{"id":"e%d"}' % offset, position=Position("t", 0, offset))


def sample(registry: CollectorRegistry, name: str, **labels: str) -> float:
    return registry.get_sample_value(name, labels or None) or 0.0


def sink_identity_gap(registry: CollectorRegistry, sink: str) -> float:
    """submitted - (delivered + Σfailed + Σdropped + in_flight) for one sink."""
    total = 0.0
    for metric in registry.collect():
        for s in metric.samples:
            if s.labels.get("sink") != sink:
                continue
            if s.name == "govpipe_sink_submitted_total":
                total += s.value
            elif s.name in ("govpipe_sink_delivered_total", "govpipe_sink_failed_total",
                            "govpipe_sink_dropped_total", "govpipe_sink_in_flight"):
                total -= s.value
    return total
