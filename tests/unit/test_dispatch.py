"""The per-sink dispatcher: retries, failure settlement and exact accounting."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest
import tenacity.wait
from prometheus_client import CollectorRegistry

from pipeline.delivery.breaker import BreakerState
from pipeline.delivery.dispatcher import SinkDispatcher
from pipeline.delivery.ledger import Ledger
from pipeline.model import SignedEvent
from pipeline.settings import RetrySettings, SinkSettings
from sinks.base import SinkError
from tests.support.fakes import FlakySink, make_event
from tests.support.metrics import sample, sink_identity_gap

FAST_RETRY = RetrySettings(max_attempts=3, initial_backoff_s=0.001, max_backoff_s=0.002)


class RecordingLedger(Ledger):
    """The real ledger, also noting which events it settled (delivered or dropped)."""

    def __init__(self, registry: CollectorRegistry, sinks: list[str]) -> None:
        super().__init__(registry, sinks)
        self.settled: list[SignedEvent] = []

    def delivered(self, sink: str, events: Sequence[SignedEvent]) -> None:
        super().delivered(sink, events)
        self.settled.extend(events)

    def dropped(self, sink: str, events: Sequence[SignedEvent], reason: str) -> None:
        super().dropped(sink, events, reason)
        self.settled.extend(events)


class RecordingDeadLetters:
    """Takes a sink's failed events as the dead-letter writer would, and keeps them."""

    def __init__(self) -> None:
        self.failed: list[tuple[str, SignedEvent, SinkError]] = []
        self.changed = asyncio.Event()

    def failed_events(self, sink: str, events: Sequence[SignedEvent],
                      error: SinkError) -> None:
        self.failed.extend((sink, event, error) for event in events)
        self.changed.set()

    def healthy(self) -> bool:
        return True


class Harness:
    def __init__(self, sink: FlakySink, **settings: object) -> None:
        self.registry = CollectorRegistry()
        settings.setdefault("retry", FAST_RETRY)
        config = SinkSettings(enabled=True, **settings)  # type: ignore[arg-type]
        self.ledger = RecordingLedger(self.registry, [sink.name])
        self.deadletters = RecordingDeadLetters()
        self.settled = self.ledger.settled
        self.failed = self.deadletters.failed
        self.changed = self.deadletters.changed
        self.dispatcher = SinkDispatcher(sink, config, self.ledger, self.deadletters)

    async def until_failed(self, count: int) -> None:
        while len(self.failed) < count:
            self.changed.clear()
            await asyncio.wait_for(self.changed.wait(), 5)

    async def run(self, count: int) -> None:
        task = asyncio.create_task(self.dispatcher.run())
        for offset in range(count):
            self.dispatcher.submit_many([make_event(offset)])
            assert sink_identity_gap(self.registry, self.dispatcher.name) == 0
        self.dispatcher.close()
        await asyncio.wait_for(task, 5)


async def test_delivers_in_batches_and_reconciles() -> None:
    sink = FlakySink()
    harness = Harness(sink, batch_size=4)
    await harness.run(10)
    assert [e.id for e in sink.delivered] == [f"e{i}" for i in range(10)]
    assert len(harness.settled) == 10
    assert sample(harness.registry, "govpipe_sink_delivered_total", sink="flaky") == 10
    assert sample(harness.registry, "govpipe_sink_in_flight", sink="flaky") == 0
    assert sink_identity_gap(harness.registry, "flaky") == 0


async def test_retriable_errors_are_retried_and_counted() -> None:
    sink = FlakySink(failures=2)
    harness = Harness(sink, batch_size=5)
    await harness.run(5)
    assert sink.attempts == 3
    assert len(sink.delivered) == 5
    assert sample(harness.registry, "govpipe_sink_retries_total", sink="flaky") == 10
    assert harness.failed == []


async def test_exhausted_retries_fail_every_event_once() -> None:
    sink = FlakySink(failures=100)
    harness = Harness(sink, batch_size=5)
    await harness.run(5)
    assert sink.attempts == 3
    assert [event.id for _, event, _ in harness.failed] == [f"e{i}" for i in range(5)]
    assert sample(harness.registry, "govpipe_sink_failed_total", sink="flaky",
                  reason="timeout") == 5
    assert sink_identity_gap(harness.registry, "flaky") == 0


async def test_non_retriable_errors_are_not_retried() -> None:
    sink = FlakySink(failures=1, error=SinkError("pipe closed", retriable=False,
                                                 reason="broken_pipe"))
    harness = Harness(sink, batch_size=10)
    await harness.run(3)
    assert sink.attempts == 1
    assert len(harness.failed) == 3
    assert sample(harness.registry, "govpipe_sink_retries_total", sink="flaky") == 0


async def test_unexpected_sink_exceptions_fail_the_batch_not_the_dispatcher() -> None:
    class BuggySink(FlakySink):
        async def send(self, batch: object) -> None:
            raise ZeroDivisionError("bug")

    harness = Harness(BuggySink(name="flaky"), batch_size=2)
    await harness.run(4)
    assert {error.reason for _, _, error in harness.failed} == {"unexpected_error"}
    assert len(harness.failed) == 4


async def test_full_queue_applies_back_pressure() -> None:
    sink = FlakySink()
    sink.gate = asyncio.Event()
    harness = Harness(sink, queue_size=3, batch_size=1)
    dispatcher = harness.dispatcher
    task = asyncio.create_task(dispatcher.run())
    for offset in range(4):
        dispatcher.submit_many([make_event(offset)])
    await asyncio.sleep(0.01)  # the first batch is taken and held at the gate
    assert dispatcher.queued == 3
    assert not dispatcher.has_room()
    waiter = asyncio.create_task(dispatcher.wait_for_room())
    await asyncio.sleep(0.01)
    assert not waiter.done()
    sink.gate.set()
    await asyncio.wait_for(waiter, 1)
    dispatcher.close()
    await asyncio.wait_for(task, 1)
    assert len(sink.delivered) == 4


async def test_full_queue_with_drop_policy_drops_and_counts() -> None:
    sink = FlakySink()
    sink.gate = asyncio.Event()
    harness = Harness(sink, queue_size=2, batch_size=10, on_full="drop")
    dispatcher = harness.dispatcher
    for offset in range(5):
        dispatcher.submit_many([make_event(offset)])
    assert dispatcher.has_room()
    assert sample(harness.registry, "govpipe_sink_dropped_total", sink="flaky",
                  reason="queue_full") == 3
    assert [event.id for event in harness.settled] == ["e2", "e3", "e4"]
    assert sink_identity_gap(harness.registry, "flaky") == 0
    sink.gate.set()
    task = asyncio.create_task(dispatcher.run())
    dispatcher.close()
    await asyncio.wait_for(task, 1)
    assert [event.id for event in sink.delivered] == ["e0", "e1"]


async def test_stop_retrying_cuts_the_backoff_short(monkeypatch: pytest.MonkeyPatch) -> None:
    # The jittered wait is uniform(0, 30 s): pinned to its top, so no second attempt can
    # come before stop_retrying() on a slow machine.
    monkeypatch.setattr(tenacity.wait.random, "uniform", lambda low, high: high)
    sink = FlakySink(failures=100)
    slow = RetrySettings(max_attempts=50, initial_backoff_s=30, max_backoff_s=60)
    harness = Harness(sink, retry=slow)
    dispatcher = harness.dispatcher
    task = asyncio.create_task(dispatcher.run())
    dispatcher.submit_many([make_event(0)])
    dispatcher.close()
    await asyncio.sleep(0.05)
    dispatcher.stop_retrying()
    await asyncio.wait_for(task, 2)
    assert [event.id for _, event, _ in harness.failed] == ["e0"]
    assert sink.attempts == 2


def breaker_harness(sink: FlakySink, on_open: str, cooldown: float = 0.05) -> Harness:
    from pipeline.settings import BreakerSettings

    return Harness(sink, batch_size=1, on_open=on_open,
                   breaker=BreakerSettings(failure_threshold=2, cooldown_s=cooldown,
                                           success_threshold=1),
                   retry=RetrySettings(max_attempts=1, initial_backoff_s=0.001,
                                       max_backoff_s=0.001))


async def test_open_breaker_dead_letters_fast_then_recovers() -> None:
    sink = FlakySink(failures=2)
    harness = breaker_harness(sink, "deadletter", cooldown=0.2)
    dispatcher = harness.dispatcher
    task = asyncio.create_task(dispatcher.run())
    for offset in range(5):
        dispatcher.submit_many([make_event(offset)])
    await harness.until_failed(5)
    reasons = [error.reason for _, _, error in harness.failed]
    assert reasons == ["timeout", "timeout", "circuit_open", "circuit_open", "circuit_open"]
    assert sink.attempts == 2  # no send while open
    assert sample(harness.registry, "govpipe_sink_circuit_state", sink="flaky") == 2
    await asyncio.sleep(0.25)  # cooldown: the next batch is the probe, and it succeeds
    dispatcher.submit_many([make_event(5)])
    dispatcher.close()
    await asyncio.wait_for(task, 2)
    assert [event.id for event in sink.delivered] == ["e5"]
    assert sample(harness.registry, "govpipe_sink_circuit_state", sink="flaky") == 0
    for to in ("open", "half_open", "closed"):
        assert sample(harness.registry, "govpipe_sink_circuit_transitions_total",
                      sink="flaky", to=to) == 1
    assert sink_identity_gap(harness.registry, "flaky") == 0


async def test_open_breaker_with_drop_policy_drops_and_counts() -> None:
    sink = FlakySink(failures=100)
    harness = breaker_harness(sink, "drop", cooldown=60)
    await harness.run(6)
    assert len(harness.failed) == 2
    assert sample(harness.registry, "govpipe_sink_dropped_total", sink="flaky",
                  reason="circuit_open") == 4
    assert len(harness.settled) == 4
    assert sink_identity_gap(harness.registry, "flaky") == 0


async def test_open_breaker_with_block_policy_holds_events_until_the_sink_returns() -> None:
    sink = FlakySink(failures=3)
    harness = breaker_harness(sink, "block", cooldown=0.05)
    await harness.run(4)
    # e0 fails before the breaker opens; e1 opens it, waits through a failed probe and a
    # second cooldown, and is delivered by the next probe.
    assert [event.id for _, event, _ in harness.failed] == ["e0"]
    assert [event.id for event in sink.delivered] == ["e1", "e2", "e3"]
    assert sample(harness.registry, "govpipe_sink_circuit_transitions_total", sink="flaky",
                  to="open") == 2
    assert sink_identity_gap(harness.registry, "flaky") == 0


async def test_a_sink_failing_some_events_only_fails_those_and_delivers_the_rest() -> None:
    class PickySink(FlakySink):
        """Takes every event but those with an odd offset (as the exactly-once Kafka sink
        refuses a record over the topic's limit and stages the others)."""

        async def send(self, batch: Sequence[SignedEvent]) -> None:
            self.attempts += 1
            odd = [e for e in batch if e.position.offset % 2]
            self.delivered.extend(e for e in batch if not e.position.offset % 2)
            if odd:
                raise SinkError("too large", retriable=False,
                                reason="message_size_too_large_error", only=odd)

    sink = PickySink(name="flaky")
    harness = Harness(sink, batch_size=4)
    await harness.run(6)
    assert [e.id for e in sink.delivered] == ["e0", "e2", "e4"]
    assert [event.id for _, event, _ in harness.failed] == ["e1", "e3", "e5"]
    assert sorted(e.id for e in harness.settled) == ["e0", "e2", "e4"]
    assert sample(harness.registry, "govpipe_sink_failed_total", sink="flaky",
                  reason="message_size_too_large_error") == 3
    assert sample(harness.registry, "govpipe_sink_delivered_total", sink="flaky") == 3
    assert sink_identity_gap(harness.registry, "flaky") == 0


def test_a_sink_error_for_some_events_is_never_retriable() -> None:
    with pytest.raises(ValueError, match="not retriable"):
        SinkError("x", retriable=True, only=[make_event(0)])


class PlannedSink(FlakySink):
    """Each send follows the next step of `plan`: "down" fails the batch (retriable),
    "picky" refuses its events with an odd offset alone (too large) and delivers the rest."""

    def __init__(self, plan: list[str]) -> None:
        super().__init__(name="flaky")
        self.plan = plan

    async def send(self, batch: Sequence[SignedEvent]) -> None:
        self.attempts += 1
        if self.plan.pop(0) == "down":
            raise self.error
        odd = [e for e in batch if e.position.offset % 2]
        self.delivered.extend(e for e in batch if not e.position.offset % 2)
        if odd:
            raise SinkError("too large", retriable=False,
                            reason="message_size_too_large_error", only=odd)


def planned_harness(plan: list[str], threshold: int, on_open: str
                    ) -> tuple[Harness, PlannedSink]:
    from pipeline.settings import BreakerSettings

    sink = PlannedSink(plan)
    harness = Harness(sink, batch_size=2, on_open=on_open,
                      breaker=BreakerSettings(failure_threshold=threshold, cooldown_s=0.05,
                                              success_threshold=1),
                      retry=RetrySettings(max_attempts=1, initial_backoff_s=0.001,
                                          max_backoff_s=0.001))
    return harness, sink


async def test_a_send_that_failed_some_events_only_resets_the_breakers_failure_streak(
        ) -> None:
    # Two timeouts in a row would open it; a send that delivered all but a refused record
    # between them is a success: the sink is up.
    harness, _ = planned_harness(["down", "picky", "down", "picky"], threshold=2,
                              on_open="deadletter")
    await harness.run(8)
    reasons = [error.reason for _, _, error in harness.failed]
    assert "circuit_open" not in reasons  # was: the third batch opened it
    too_large = "message_size_too_large_error"
    assert reasons == ["timeout", "timeout", too_large, "timeout", "timeout", too_large]
    assert harness.dispatcher.policy.breaker.state is BreakerState.CLOSED
    assert sink_identity_gap(harness.registry, "flaky") == 0


async def test_a_probe_that_failed_some_events_only_closes_the_breaker() -> None:
    harness, sink = planned_harness(["down", "picky", "picky"], threshold=1, on_open="block")
    await harness.run(4)
    assert harness.dispatcher.policy.breaker.state is BreakerState.CLOSED  # was: half-open
    assert [e.id for e in sink.delivered] == ["e0", "e2"]
    assert [event.id for _, event, _ in harness.failed] == ["e1", "e3"]
    assert sink_identity_gap(harness.registry, "flaky") == 0


async def test_a_send_whose_every_event_was_refused_leaves_the_breaker_as_it_was() -> None:
    harness, _ = planned_harness(["down", "picky", "picky"], threshold=1, on_open="block")
    task = asyncio.create_task(harness.dispatcher.run())
    harness.dispatcher.submit_many([make_event(1)])  # refused alone: not a success
    await harness.until_failed(1)
    assert harness.dispatcher.policy.breaker.state is BreakerState.HALF_OPEN
    harness.dispatcher.submit_many([make_event(2), make_event(3)])
    harness.dispatcher.close()
    await asyncio.wait_for(task, 5)
    assert harness.dispatcher.policy.breaker.state is BreakerState.CLOSED
