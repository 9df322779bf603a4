"""Keeps delivered events in memory: for tests and dry runs."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from pipeline.model import SignedEvent
from sinks.base import SinkError


class MemorySink:
    """Appends every delivered batch to `events`; can be told to fail for tests."""

    def __init__(self, name: str = "memory") -> None:
        self.name = name
        self.events: list[SignedEvent] = []
        self.batches = 0
        self.fail_with: SinkError | None = None
        self.closed = False
        self._changed = asyncio.Event()

    async def wait_for_count(self, count: int) -> None:
        """Return once at least `count` events have been delivered."""
        while len(self.events) < count:
            self._changed.clear()
            await self._changed.wait()

    async def send(self, batch: Sequence[SignedEvent]) -> None:
        if self.closed:
            raise SinkError("memory sink is closed", retriable=False, reason="closed")
        if self.fail_with is not None:
            raise self.fail_with
        if not batch:
            return
        self.events.extend(batch)
        self.batches += 1
        self._changed.set()

    async def aclose(self) -> None:
        self.closed = True
