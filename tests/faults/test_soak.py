"""Issue 8.8: a soak. N events (GOVPIPE_SOAK_EVENTS: 100 000 by default, as CI runs it;
1 000 000 by hand: `GOVPIPE_SOAK_EVENTS=1000000 pytest -m soak`) through an in-process daemon on
a real broker, with one sink failing at random (retriable and fatal errors, and outages
long enough to open its breaker) and one broker restart mid-stream. At the end every
identity holds exactly, every id reached each sink or that sink's dead-letter, and the
committed offsets reach the end of the topic."""

from __future__ import annotations

import asyncio
import json
import os
import random
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import pytest
from prometheus_client import generate_latest

from pipeline.model import SignedEvent
from pipeline.settings import BreakerSettings, RetrySettings, SinkSettings
from sinks.base import SinkError
from tests.support.daemons import RunningDaemon, kafka_settings
from tests.support.events import event_value
from tests.support.identities import assert_reconciled
from tests.support.infra.kafka import KafkaBroker
from tests.support.kafka_clients import committed_offsets, create_topics, produce_fast
from tests.support.waiting import eventually, eventually_async

pytestmark = [pytest.mark.integration, pytest.mark.soak]

EVENTS = int(os.environ.get("GOVPIPE_SOAK_EVENTS", "100000"))
SEED = int(os.environ.get("GOVPIPE_SOAK_SEED", str(random.SystemRandom().randrange(2**32))))
PARTITIONS = 4


class IdSink:
    """Keeps only the ids it delivered (a million events must fit in memory)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.delivered: Counter[str] = Counter()

    async def send(self, batch: Sequence[SignedEvent]) -> None:
        self.delivered.update(event.id for event in batch)

    async def aclose(self) -> None:
        return None


class ChaosSink(IdSink):
    """Fails at random: 5 % retriable, 1 % fatal, and 1 % of sends start an outage of
    0.2-1.5 s in which every send fails (long enough to open the breaker)."""

    def __init__(self, name: str, rng: random.Random) -> None:
        super().__init__(name)
        self._rng = rng
        self._down_until = 0.0
        self.faults: Counter[str] = Counter()

    async def send(self, batch: Sequence[SignedEvent]) -> None:
        await asyncio.sleep(0)
        roll, now = self._rng.random(), time.monotonic()
        if now < self._down_until or roll < 0.01:
            if now >= self._down_until:
                self._down_until = now + self._rng.uniform(0.2, 1.5)
            self.faults["outage"] += 1
            raise SinkError("chaos: down", retriable=True, reason="chaos_outage")
        if roll < 0.06:
            self.faults["retriable"] += 1
            raise SinkError("chaos: timeout", retriable=True, reason="chaos_timeout")
        if roll < 0.07:
            self.faults["fatal"] += 1
            raise SinkError("chaos: refused", retriable=False, reason="chaos_refused")
        await super().send(batch)


def _dead_lettered(directory: Path) -> dict[str, Counter[str]]:
    by_sink: dict[str, Counter[str]] = {}
    for path in directory.glob("deadletter-*.jsonl"):
        with path.open("rb") as handle:
            for line in handle:
                entry = json.loads(line)
                by_sink.setdefault(entry["origin"], Counter())[entry["event"]["id"]] += 1
    return by_sink


async def test_soak_random_sink_failures_and_a_broker_restart(own_broker: KafkaBroker,
                                                              tmp_path: Path) -> None:
    bootstrap, topic = own_broker.bootstrap, "soak"
    # First, so a failed run can be replayed with GOVPIPE_SOAK_SEED whatever fails.
    print(f"\nsoak seed {SEED} (GOVPIPE_SOAK_SEED), {EVENTS} events")
    await create_topics(bootstrap, [topic], partitions=PARTITIONS)
    started = time.monotonic()
    await produce_fast(bootstrap, topic, (event_value(n, "s") for n in range(EVENTS)))
    produced_s = time.monotonic() - started
    settings = kafka_settings(bootstrap, topic, tmp_path, GOVPIPE_SHUTDOWN__TIMEOUT_S="30")
    steady, chaos = IdSink("steady"), ChaosSink("chaos", random.Random(SEED))
    fragile = SinkSettings(
        enabled=True, batch_size=200,
        retry=RetrySettings(max_attempts=3, initial_backoff_s=0.01, max_backoff_s=0.05),
        breaker=BreakerSettings(failure_threshold=3, cooldown_s=0.3, success_threshold=1))
    running = RunningDaemon(settings, [(steady, SinkSettings(enabled=True)), (chaos, fragile)])
    async with running:
        await eventually(lambda: running.sample("govpipe_source_records_total") >= EVENTS / 3,
                         600, 0.1)
        restart_at = running.sample("govpipe_source_records_total")
        await asyncio.to_thread(own_broker.stop)
        await asyncio.sleep(5)
        await asyncio.to_thread(own_broker.start)

        async def all_committed() -> bool:
            offsets = await committed_offsets(bootstrap, settings.source.group_id)
            return sum(offsets.values()) == EVENTS
        await eventually_async(all_committed, 900, 0.5)
        outcome = await running.stop()
    elapsed = time.monotonic() - started - produced_s

    assert (outcome.exit_code, outcome.unsettled) == (0, 0)
    scrape = generate_latest(running.registry).decode()
    assert_reconciled(scrape)
    expected = {f"s-{n:08d}" for n in range(EVENTS)}
    dead = _dead_lettered(tmp_path / "deadletter")
    assert set(steady.delivered) == expected
    assert "steady" not in dead
    chaos_dead = dead.get("chaos", Counter())
    assert set(chaos.delivered) | set(chaos_dead) == expected
    for sink, delivered in (("steady", steady.delivered), ("chaos", chaos.delivered)):
        assert running.sample("govpipe_sink_delivered_total", sink=sink) == delivered.total()
        assert running.sample("govpipe_sink_in_flight", sink=sink) == 0
    failed = sum(running.sample("govpipe_sink_failed_total", sink="chaos", reason=reason)
                 for reason in ("chaos_outage", "chaos_timeout", "chaos_refused",
                                "circuit_open"))
    assert failed == chaos_dead.total()
    assert running.sample("govpipe_deadletter_written_total", origin="chaos") == failed
    read = running.sample("govpipe_source_records_total")
    assert read == running.sample("govpipe_events_accepted_total") >= EVENTS
    print(f"\nsoak seed {SEED}: {EVENTS} events in {elapsed:.1f}s ({EVENTS / elapsed:.0f}/s), "
          f"broker restarted after {restart_at:.0f} read; records read {read:.0f} "
          f"(redelivered {read - EVENTS:.0f}); chaos faults {dict(chaos.faults)}, "
          f"chaos delivered {chaos.delivered.total()}, dead-lettered {chaos_dead.total()}, "
          f"breaker opened "
          f"{running.sample('govpipe_sink_circuit_transitions_total', sink='chaos', to='open'):.0f}"
          f" times")
