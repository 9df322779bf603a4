"""Back-pressure waits only for what is full."""

from __future__ import annotations

import asyncio

from prometheus_client import CollectorRegistry

from pipeline.delivery.dispatcher import SinkDispatcher
from pipeline.delivery.ledger import Ledger
from pipeline.delivery.room import PipelineRoom
from pipeline.settings import SinkSettings
from tests.support.fakes import FlakySink, make_event


class NoDeadLetters:
    pending = 0

    def has_room(self) -> bool:
        return True

    async def wait_for_room(self) -> None:
        return None

    def failed_events(self, *_: object) -> None:
        raise AssertionError("nothing fails here")

    def healthy(self) -> bool:
        return True


async def test_a_full_sink_that_drops_does_not_hold_the_source() -> None:
    # Was: `wait` waited for every sink's queue, so a full queue of a sink that drops when
    # full (and so always "has room") stalled the stdin and file sources.
    ledger = Ledger(CollectorRegistry(), ["flaky"])
    settings = SinkSettings(enabled=True, queue_size=2, on_full="drop")
    dispatcher = SinkDispatcher(FlakySink(), settings, ledger, NoDeadLetters())
    dispatcher.submit_many([make_event(offset) for offset in range(3)])  # full, one dropped
    room = PipelineRoom([dispatcher], NoDeadLetters(), ledger)
    assert room.available()
    await asyncio.wait_for(room.wait(), 1)
