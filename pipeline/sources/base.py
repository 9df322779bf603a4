"""What every source is, and what it asks before reading more."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Protocol

from pipeline.model import Record
from pipeline.ops.health import Status


class Room(Protocol):
    """Whether the sinks can take more events now (back-pressure)."""

    def available(self) -> bool: ...

    async def wait(self) -> None: ...

    def note_pause(self) -> None:
        """Count that reading stops now until `available` (once per pause)."""
        ...


class Source(Protocol):
    """Where records come from: a Kafka topic, or lines of stdin or a file."""

    name: str

    def batches(self, room: Room) -> AsyncIterator[list[Record]]:
        """Yield batches of records, asking `room` before reading more."""
        ...

    async def commit(self) -> None:
        """Record progress up to the settled prefix (a no-op where nothing is kept)."""
        ...

    async def refresh_metrics(self) -> None:
        """Update source gauges that need a round trip (Kafka lag)."""
        ...

    def health(self) -> tuple[Status, str]: ...

    async def aclose(self) -> None: ...
