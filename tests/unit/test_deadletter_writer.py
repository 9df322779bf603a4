"""The dead-letter writer survives whatever a write raises: it is the only way rejections and
failed events get settled, so a failure is counted, reported and retried, never fatal."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

import pytest
from prometheus_client import CollectorRegistry

from pipeline.deadletter.entry import DeadLetterEntry
from pipeline.deadletter.store import DeadLetterError, DeadLetterRefused
from pipeline.deadletter.writer import DeadLetterWriter
from pipeline.delivery.ledger import Ledger
from pipeline.ops.metrics import Metrics
from sinks.base import SinkError
from tests.support.fakes import StoreStub, make_event
from tests.support.metrics import sample


class ScriptedStore(StoreStub):
    """Raises the scripted exceptions, one per write, then keeps what it is given."""

    description = "scripted store"

    def __init__(self, *failures: Exception) -> None:
        self.failures = list(failures)
        self.written: list[DeadLetterEntry] = []
        self.stored = asyncio.Event()

    async def write(self, entries: Sequence[DeadLetterEntry]) -> None:
        if self.failures:
            raise self.failures.pop(0)
        self.written.extend(entries)
        self.stored.set()


async def test_an_unexpected_write_error_is_retried_not_fatal(
        caplog: pytest.LogCaptureFixture) -> None:
    # Was: only DeadLetterError was caught; a TypeError from building the payload ended the
    # writer's task, and with it the daemon's task group.
    store = ScriptedStore(TypeError("Type is not JSON serializable: bytes"),
                          TypeError("Type is not JSON serializable: bytes"),
                          DeadLetterError("disk full"))
    registry = CollectorRegistry()
    ledger = Ledger(registry, ["memory"])
    writer = DeadLetterWriter(store, ledger, Metrics(registry), retry_backoff_s=0.01)
    events = [make_event(offset) for offset in range(3)]
    for event in events:
        ledger.tracker.track(event.position, 1)
    caplog.set_level(logging.ERROR, logger="pipeline.deadletter.writer")

    run = asyncio.create_task(writer.run())
    writer.failed_events("memory", events, SinkError("down", retriable=False, reason="x"))
    await asyncio.wait_for(store.stored.wait(), 5)
    assert not run.done(), run
    writer.close()
    await asyncio.wait_for(run, 5)

    assert [entry.position for entry in store.written] == [e.position for e in events]
    assert ledger.tracker.outstanding == 0
    assert writer.pending == 0
    assert writer.last_error is None
    assert sample(registry, "govpipe_deadletter_errors_total") == 3
    failures = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(failures) == 3
    # The traceback once per streak of failures, not once per retry.
    assert [bool(r.exc_info) for r in failures] == [True, False, False]


async def test_last_error_names_an_unexpected_failure_while_it_lasts() -> None:
    store = ScriptedStore(*[RuntimeError("boom")] * 1000)
    registry = CollectorRegistry()
    ledger = Ledger(registry, ["memory"])
    writer = DeadLetterWriter(store, ledger, Metrics(registry), retry_backoff_s=0.01)
    run = asyncio.create_task(writer.run())
    writer.failed_events("memory", [make_event(1)], SinkError("down", retriable=False))
    for _ in range(500):
        if writer.last_error is not None:
            break
        await asyncio.sleep(0.01)
    assert writer.last_error is not None
    assert "boom" in writer.last_error
    assert not writer.healthy()
    assert not run.done()
    run.cancel()
    await asyncio.gather(run, return_exceptions=True)
    assert writer.pending == 1  # held, never dropped


async def test_a_destination_refusing_even_summaries_is_logged_once_a_minute(
        caplog: pytest.LogCaptureFixture) -> None:
    # A topic that takes no 1 KiB record: a configuration error, retried every backoff
    # until it is fixed, without an error line per retry.
    now = [0.0]
    store = ScriptedStore(*[DeadLetterRefused("refuses even the summary")] * 30)
    registry = CollectorRegistry()
    ledger = Ledger(registry, ["memory"])
    clock_steps = iter([0.0] * 10 + [61.0] * 10 + [200.0] * 20)

    def clock() -> float:
        now[0] = next(clock_steps)
        return now[0]

    writer = DeadLetterWriter(store, ledger, Metrics(registry), retry_backoff_s=0.001,
                              clock=clock)
    event = make_event(0)
    ledger.tracker.track(event.position, 1)
    caplog.set_level(logging.ERROR, logger="pipeline.deadletter.writer")
    run = asyncio.create_task(writer.run())
    writer.failed_events("memory", [event], SinkError("x", retriable=False, reason="x"))
    await asyncio.wait_for(store.stored.wait(), 5)
    writer.close()
    await asyncio.wait_for(run, 5)
    assert len(store.written) == 1
    assert sample(registry, "govpipe_deadletter_errors_total") == 30
    assert len([r for r in caplog.records if "refused" in r.getMessage()]) == 3
