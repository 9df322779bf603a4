"""The pipeline core against a real Kafka broker (issue 4): at-least-once delivery with
contiguous commits, isolation of a dead sink, back-pressure, and a dead-letter outage."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from pathlib import Path

from prometheus_client import generate_latest

from pipeline.deadletter.entry import DeadLetterEntry
from pipeline.deadletter.store import DeadLetterError
from pipeline.settings import BreakerSettings, RetrySettings, SinkSettings
from sinks.base import SinkError
from tests.support.daemons import RunningDaemon, kafka_settings
from tests.support.events import numbered_events
from tests.support.fakes import FlakySink, MemorySink
from tests.support.identities import assert_reconciled
from tests.support.infra.kafka import KafkaBroker
from tests.support.kafka_clients import committed_offsets, create_topics, produce
from tests.support.waiting import eventually


async def scrape_until_done(running: RunningDaemon, done: asyncio.Event) -> int:
    """Scrape /metrics' registry every few ms while the daemon runs; every scrape must
    reconcile. Returns how many scrapes were taken."""
    scrapes = 0
    while not done.is_set():
        assert_reconciled(generate_latest(running.registry).decode())
        scrapes += 1
        await asyncio.sleep(0.01)
    return scrapes


def sink_settings(**overrides: object) -> SinkSettings:
    return SinkSettings(enabled=True, **overrides)  # type: ignore[arg-type]


async def test_ten_thousand_events_reach_every_sink_and_offsets_reach_the_end(
        kafka_broker: KafkaBroker, tmp_path: Path, daemons: list[RunningDaemon]) -> None:
    topic = "core-10k"
    await create_topics(kafka_broker.bootstrap, [topic], partitions=3)
    values = numbered_events(10_000)
    await produce(kafka_broker.bootstrap, topic, values)
    settings = kafka_settings(kafka_broker.bootstrap, topic, tmp_path)
    first, second = MemorySink("first"), MemorySink("second")
    running = RunningDaemon(settings, [(first, sink_settings()), (second, sink_settings())])
    done = asyncio.Event()
    daemons.append(running)
    running.start()
    scraper = asyncio.create_task(scrape_until_done(running, done))
    await asyncio.wait_for(asyncio.gather(first.wait_for_count(10_000),
                                          second.wait_for_count(10_000)), 120)
    done.set()
    assert await scraper >= 2  # the loop is busy: few scrapes fit in a fast run
    outcome = await running.stop()

    assert (outcome.exit_code, outcome.unsettled) == (0, 0)
    expected = {json.loads(value)["event_id"] for value in values}
    assert {event.id for event in first.events} == expected
    assert {event.id for event in second.events} == expected
    assert_reconciled(generate_latest(running.registry).decode())
    assert running.sample("govpipe_sink_delivered_total", sink="first") == 10_000
    offsets = await committed_offsets(kafka_broker.bootstrap, settings.source.group_id)
    assert sum(offsets.values()) == 10_000


async def test_a_dead_sink_is_isolated_dead_lettered_and_recovers(
        kafka_broker: KafkaBroker, tmp_path: Path, daemons: list[RunningDaemon]) -> None:
    topic = "core-dead-sink"
    await create_topics(kafka_broker.bootstrap, [topic])
    await produce(kafka_broker.bootstrap, topic, numbered_events(300, "dead"))
    settings = kafka_settings(kafka_broker.bootstrap, topic, tmp_path)
    good, bad = MemorySink("good"), MemorySink("bad")
    bad.fail_with = SinkError("connection refused", retriable=True, reason="unavailable")
    fragile = sink_settings(
        batch_size=20, retry=RetrySettings(max_attempts=2, initial_backoff_s=0.01,
                                           max_backoff_s=0.02),
        breaker=BreakerSettings(failure_threshold=2, cooldown_s=0.5, success_threshold=1))
    running = RunningDaemon(settings, [(good, sink_settings(batch_size=20)), (bad, fragile)])
    daemons.append(running)
    running.start()
    await asyncio.wait_for(good.wait_for_count(300), 60)
    await eventually(lambda: running.sample("govpipe_deadletter_written_total",
                                            origin="bad") == 300)
    assert running.sample("govpipe_sink_failed_total", sink="bad", reason="circuit_open") > 0
    assert running.sample("govpipe_sink_circuit_transitions_total", sink="bad", to="open") >= 1
    assert running.sample("govpipe_sink_circuit_state", sink="bad") in (1, 2)
    status, components = running.daemon.health.evaluate()
    assert status.value == "degraded"
    assert {c.name: c.status.value for c in components}["sink:bad"] == "degraded"

    bad.fail_with = None  # the sink comes back: the next probe after the cooldown succeeds
    await asyncio.sleep(0.6)
    await produce(kafka_broker.bootstrap, topic, numbered_events(40, "back"))
    await asyncio.wait_for(bad.wait_for_count(40), 30)
    assert running.sample("govpipe_sink_circuit_state", sink="bad") == 0
    assert running.sample("govpipe_sink_circuit_transitions_total", sink="bad",
                          to="closed") >= 1
    outcome = await running.stop()
    assert outcome.exit_code == 0
    entries = [json.loads(line) for path in (tmp_path / "deadletter").glob("*.jsonl")
               for line in path.read_text().splitlines()]
    assert len(entries) == 300
    assert {e["sink"] for e in entries} == {"bad"}
    assert {e["reason"] for e in entries} <= {"unavailable", "circuit_open"}
    assert all(e["event"]["agtsignature"] and e["source"]["topic"] == topic for e in entries)
    offsets = await committed_offsets(kafka_broker.bootstrap, settings.source.group_id)
    assert offsets == {0: 340}


async def test_full_queue_pauses_fetching_then_catches_up(
        kafka_broker: KafkaBroker, tmp_path: Path, daemons: list[RunningDaemon]) -> None:
    topic = "core-backpressure"
    await create_topics(kafka_broker.bootstrap, [topic])
    await produce(kafka_broker.bootstrap, topic, numbered_events(5_000, "bp"))
    settings = kafka_settings(kafka_broker.bootstrap, topic, tmp_path)
    slow = FlakySink("slow")
    slow.gate = asyncio.Event()
    running = RunningDaemon(settings, [(slow, sink_settings(queue_size=100, batch_size=50))])
    daemons.append(running)
    running.start()
    await eventually(lambda: running.sample("govpipe_sink_in_flight", sink="slow") >= 100)
    await asyncio.sleep(2)  # let a fetcher that ignores back-pressure show itself
    read = running.sample("govpipe_source_records_total")
    # One batch held by the sink + a full queue + at most one fetch that arrived meanwhile.
    assert read <= 50 + 100 + 500
    # Lag comes from the brokers' end offsets, so a paused source still sees it grow.
    await produce(kafka_broker.bootstrap, topic, numbered_events(1_000, "bp-more"))
    await eventually(
        lambda: running.sample("govpipe_source_lag", partition="0") == 6_000 - read)
    assert running.sample("govpipe_source_records_total") == read  # still paused
    slow.gate.set()
    await eventually(lambda: len(slow.delivered) == 6_000, 60)
    outcome = await running.stop()
    assert outcome.exit_code == 0
    assert running.sample("govpipe_source_records_total") == 6_000


async def test_full_queue_with_drop_policy_counts_drops(
        kafka_broker: KafkaBroker, tmp_path: Path, daemons: list[RunningDaemon]) -> None:
    topic = "core-drop"
    await create_topics(kafka_broker.bootstrap, [topic])
    await produce(kafka_broker.bootstrap, topic, numbered_events(1_000, "drop"))
    settings = kafka_settings(kafka_broker.bootstrap, topic, tmp_path)
    slow = FlakySink("slow")
    slow.gate = asyncio.Event()
    running = RunningDaemon(settings, [(slow, sink_settings(queue_size=50, batch_size=10,
                                                            on_full="drop"))])
    daemons.append(running)
    running.start()
    await eventually(lambda: running.sample("govpipe_source_records_total") == 1_000)
    dropped = running.sample("govpipe_sink_dropped_total", sink="slow", reason="queue_full")
    assert dropped >= 1_000 - 60
    slow.gate.set()
    outcome = await running.stop()
    assert outcome.exit_code == 0
    assert len(slow.delivered) + dropped == 1_000
    assert_reconciled(generate_latest(running.registry).decode())


class BrokenDeadLetter:
    description = "a dead-letter store that is down"

    def __init__(self) -> None:
        self.attempts = 0

    async def write(self, entries: Sequence[DeadLetterEntry]) -> None:
        self.attempts += 1
        raise DeadLetterError("disk full")

    def check(self) -> str | None:
        return "disk full"

    def recover(self) -> list[str]:
        return []

    async def aclose(self) -> None:
        return None


async def test_dead_letter_outage_holds_offsets(
        kafka_broker: KafkaBroker, tmp_path: Path, daemons: list[RunningDaemon]) -> None:
    topic = "core-dlq-down"
    await create_topics(kafka_broker.bootstrap, [topic])
    await produce(kafka_broker.bootstrap, topic, numbered_events(30, "held"))
    settings = kafka_settings(kafka_broker.bootstrap, topic, tmp_path,
                              GOVPIPE_SHUTDOWN__TIMEOUT_S="2")
    refusing = MemorySink("refusing")
    refusing.fail_with = SinkError("record refused", retriable=False, reason="refused")
    dead_letter = BrokenDeadLetter()
    running = RunningDaemon(settings, [(refusing, sink_settings())], deadletter=dead_letter)
    daemons.append(running)
    running.start()
    await eventually(lambda: running.sample("govpipe_sink_failed_total", sink="refusing",
                                            reason="refused") == 30)
    await eventually(lambda: dead_letter.attempts >= 2)
    await asyncio.sleep(1)  # several commit intervals pass
    status, components = running.daemon.health.evaluate()
    assert status.value == "unhealthy"
    assert {c.name: c.status.value for c in components}["deadletter"] == "unhealthy"
    outcome = await running.stop()
    assert outcome.exit_code == 1
    assert outcome.unsettled == 30
    assert running.sample("govpipe_deadletter_errors_total") >= 2
    assert running.sample("govpipe_deadletter_written_total", origin="refusing") == 0
    offsets = await committed_offsets(kafka_broker.bootstrap, settings.source.group_id)
    assert offsets.get(0, 0) == 0  # nothing committed past an event that is nowhere
