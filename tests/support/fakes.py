"""Fakes for tests: sinks that keep what they get in memory or fail on cue, and a
hand-made signed event, an executor that holds its work."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from concurrent.futures import Executor, Future
from typing import Any

from pipeline.deadletter.store import StoredEntries
from pipeline.model import Position, SignedEvent
from sinks.base import SinkError


class MemorySink:
    """Appends every delivered batch to `events`; can be told to fail (`fail_with`)."""

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


class StoreStub:
    """A dead-letter store with nothing stored and nothing to repair: subclasses give
    `write` (and a `description`) the behaviour a test needs."""

    description = "store stub"

    def check(self) -> str | None:
        return None

    def recover(self) -> list[str]:
        return []

    async def read(self) -> StoredEntries:
        return StoredEntries()

    async def mark_replayed(self, entry_ids: Sequence[str]) -> None:
        return None

    async def aclose(self) -> None:
        return None


class HeldExecutor(Executor):
    """An executor that runs nothing until told: `submitted` holds each call's arguments
    and its future, which the test settles (`settle`); `shut_down` tells if it was closed."""

    def __init__(self) -> None:
        self.submitted: list[tuple[tuple[object, ...], Future[Any]]] = []
        self.shut_down = False

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        future: Future[Any] = Future()
        self.submitted.append((args, future))
        return future

    def settle(self, result: object) -> None:
        for _, future in self.submitted:
            if not future.done():
                future.set_result(result)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        self.shut_down = True
