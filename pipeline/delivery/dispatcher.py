"""The per-sink dispatcher: a bounded queue and batching in front of a dumb sink, with the
delivery policy (retries, breaker) around each send and the ledger told where each event
ended. It owns its sink: closing and health go through it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Sequence
from typing import Protocol

from pipeline.delivery.breaker import MonotonicClock
from pipeline.delivery.capacity import Capacity
from pipeline.delivery.ledger import Ledger
from pipeline.delivery.policy import CircuitOpen, DeliveryPolicy
from pipeline.model import SignedEvent
from pipeline.ops.health import Status
from pipeline.settings import SinkSettings
from sinks.base import Sink, SinkError

log = logging.getLogger(__name__)


class DeadLetters(Protocol):
    """Where a sink's failed events go, each settled once its entry is written."""

    def failed_events(self, sink: str, events: Sequence[SignedEvent],
                      error: SinkError) -> None: ...

    def healthy(self) -> bool: ...


class SinkDispatcher:
    """Feeds one sink from its own bounded queue; a slow sink only slows itself.

    `submit_many` is synchronous and never blocks: the source asks `has_room` /
    `wait_for_room` before reading more (back-pressure) unless `on_full = "drop"`.
    """

    def __init__(self, sink: Sink, settings: SinkSettings, ledger: Ledger,
                 deadletters: DeadLetters, clock: MonotonicClock = time.monotonic) -> None:
        self.sink = sink
        self.name = sink.name
        self._settings = settings
        self._ledger = ledger
        self._deadletters = deadletters
        self.policy = DeliveryPolicy(self.name, settings, ledger, clock)
        self._queue: deque[SignedEvent] = deque()
        self._capacity = Capacity(settings.queue_size)
        self._wake = asyncio.Event()
        self._closing = False
        self.last_error: str | None = None

    @property
    def queued(self) -> int:
        return len(self._queue)

    def has_room(self) -> bool:
        return self._settings.on_full == "drop" or self._capacity.fits(len(self._queue))

    async def wait_for_room(self) -> None:
        await self._capacity.wait()

    def submit_many(self, events: Sequence[SignedEvent]) -> None:
        """Take a batch of events; each is counted as submitted and settles exactly once.
        With `on_full = "drop"` what does not fit is dropped (and counted) at once."""
        if not events:
            return
        self._ledger.submitted(self.name, len(events))
        fits = len(events)
        if self._settings.on_full == "drop":
            fits = max(0, self._settings.queue_size - len(self._queue))
            if fits < len(events):
                self._ledger.dropped(self.name, events[fits:], "queue_full")
        self._queue.extend(events[:fits])
        self._capacity.update(len(self._queue))
        self._wake.set()

    def close(self) -> None:
        """No more events will come; `run` returns once the queue is empty."""
        self._closing = True
        self._wake.set()

    def stop_retrying(self) -> None:
        """Shutdown deadline: cut retry waits short and make the current batch final."""
        self.policy.stop_retrying()

    async def aclose(self) -> None:
        await self.sink.aclose()

    def health(self) -> tuple[Status, str]:
        state = self.policy.breaker.state.value
        if state != "closed":
            # Open is degraded while events still reach the dead-letter, else unhealthy.
            status = Status.DEGRADED if self._deadletters.healthy() else Status.UNHEALTHY
            return status, f"circuit breaker {state}; last error: {self.last_error}"
        if self.last_error:
            return Status.DEGRADED, f"last send failed: {self.last_error}"
        return Status.HEALTHY, f"circuit closed, {self.queued} queued, last send ok"

    async def run(self) -> None:
        while self._queue or not self._closing:
            if not self._queue:
                self._wake.clear()
                await self._wake.wait()
                continue
            batch = [self._queue.popleft()
                     for _ in range(min(self._settings.batch_size, len(self._queue)))]
            self._capacity.update(len(self._queue))
            await self._deliver(batch)

    async def _deliver(self, batch: Sequence[SignedEvent]) -> None:
        while True:
            try:
                await self.policy.deliver(lambda: self.sink.send(batch), len(batch))
            except CircuitOpen:
                if self._should_block():
                    await self.policy.wait_for_probe()
                    continue
                self._refused(batch)
            except SinkError as exc:
                if exc.retriable and self.policy.unavailable() and self._should_block():
                    await self.policy.wait_for_probe()
                    continue
                self._failed_part(batch, exc)
            except Exception as exc:  # a sink bug must not kill its dispatcher or lose events
                log.exception("sink %s raised an unexpected error", self.name)
                self._failed(batch, SinkError(repr(exc), retriable=False,
                                              reason="unexpected_error"))
            else:
                self.last_error = None
                self._ledger.delivered(self.name, batch)
            return

    def _should_block(self) -> bool:
        # At shutdown, blocked events are dead-lettered rather than held past the deadline.
        return self._settings.on_open == "block" and not self.policy.stopping

    def _refused(self, batch: Sequence[SignedEvent]) -> None:
        """The breaker is open: fail fast to the dead-letter, or drop, as configured."""
        if self._settings.on_open == "drop":
            self._ledger.dropped(self.name, batch, "circuit_open")
            return
        self._failed(batch, SinkError(f"{self.name} circuit breaker is open",
                                      retriable=False, reason="circuit_open"))

    def _failed_part(self, batch: Sequence[SignedEvent], exc: SinkError) -> None:
        """`exc.only` failed, the rest of `batch` was delivered; or all of it failed."""
        if exc.only is None:
            self._failed(batch, exc)
            return
        failed = {id(event) for event in exc.only}
        self._ledger.delivered(self.name, [e for e in batch if id(e) not in failed])
        self._failed([e for e in batch if id(e) in failed], exc)

    def _failed(self, batch: Sequence[SignedEvent], exc: SinkError) -> None:
        if exc.reason != "circuit_open":  # the open transition was logged once already
            self.last_error = str(exc)
            log.error("sink %s failed %d events: %s", self.name, len(batch), exc,
                      extra={"fields": {"sink": self.name, "reason": exc.reason}})
        self._ledger.failed(self.name, batch, exc.reason)
        self._deadletters.failed_events(self.name, batch, exc)
