"""The writer that feeds a dead-letter store.

An entry is made for every rejected record (origin "source") and every event a sink gave
up on (origin = the sink). Each entry carries its record's position, the acknowledgement
handle: once the entry is durably written, the ledger settles that position. A failed
write holds the position and is retried, never dropped.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Sequence

from pipeline.deadletter.entry import DeadLetterEntry
from pipeline.deadletter.store import DeadLetterError, DeadLetterStore
from pipeline.delivery.capacity import Capacity
from pipeline.delivery.ledger import Ledger
from pipeline.model import Rejection, SignedEvent
from pipeline.ops.health import Status
from pipeline.ops.metrics import Metrics
from sinks.base import SinkError

log = logging.getLogger(__name__)

WRITE_BATCH = 1000


class DeadLetterWriter:
    """Batches entries to a store, retrying failed writes until they succeed.

    Taking entries never blocks. `run` is the background task; `close` makes it return
    once nothing is pending (a write that keeps failing is retried until the task is
    cancelled). The backlog is bounded by back-pressure, as sink queues are: past
    `max_pending` entries `has_room` is false and the source stops reading (entries from
    events already in the sinks' queues still come; the bound is that much soft).
    `last_error` is the failure of the last write, None once a write succeeds.
    """

    def __init__(self, store: DeadLetterStore, ledger: Ledger, metrics: Metrics, *,
                 retry_backoff_s: float = 1.0, max_pending: int = 10_000) -> None:
        self.store = store
        self._ledger = ledger
        self._metrics = metrics
        self._backoff_s = retry_backoff_s
        self._pending: list[DeadLetterEntry] = []
        self._capacity = Capacity(max_pending)
        self._wake = asyncio.Event()
        self._closing = False
        self.last_error: str | None = None
        self._traced = False  # the current streak of failed writes logged a traceback

    @property
    def pending(self) -> int:
        return len(self._pending)

    def has_room(self) -> bool:
        return self._capacity.fits(len(self._pending))

    async def wait_for_room(self) -> None:
        await self._capacity.wait()

    def rejected(self, rejections: Sequence[Rejection]) -> None:
        """Records that could not become events: their original bytes, with the reason."""
        self._take([DeadLetterEntry(
            origin="source", reason=r.reason, error=r.detail, position=r.record.position,
            value=r.record.value, key=r.record.key, headers=r.record.headers)
            for r in rejections])

    def failed_events(self, sink: str, events: Sequence[SignedEvent],
                      error: SinkError) -> None:
        """Events `sink` gave up on: the signed CloudEvent, with the sink's error."""
        self._take([DeadLetterEntry(
            origin=sink, reason=error.reason, error=str(error), position=event.position,
            event=event.attributes, sink=sink) for event in events])

    def _take(self, entries: list[DeadLetterEntry]) -> None:
        self._pending.extend(entries)
        self._changed()
        self._wake.set()

    def _changed(self) -> None:
        self._metrics.deadletter_pending.set(len(self._pending))
        self._capacity.update(len(self._pending))

    def recover(self) -> list[str]:
        """Before the first write: repair what a crash left half-written."""
        return self.store.recover()

    def health(self) -> tuple[Status, str]:
        problem = self.last_error or self.store.check()
        if problem:
            return Status.UNHEALTHY, problem
        return Status.HEALTHY, f"writable: {self.store.description}"

    def healthy(self) -> bool:
        return self.health()[0] is Status.HEALTHY

    def close(self) -> None:
        self._closing = True
        self._wake.set()

    async def aclose(self) -> None:
        await self.store.aclose()

    def _failed(self, exc: Exception) -> None:
        self._metrics.deadletter_errors.inc()
        self.last_error = str(exc) or type(exc).__name__

    async def run(self) -> None:
        while True:
            if not self._pending:
                if self._closing:
                    return
                self._wake.clear()
                await self._wake.wait()
                continue
            batch = self._pending[:WRITE_BATCH]
            if await self._write(batch):
                del self._pending[: len(batch)]
                self._changed()
                self._ledger.dead_lettered(batch)
            else:
                await asyncio.sleep(self._backoff_s)  # a retry wait; cancelled at shutdown

    async def _write(self, batch: list[DeadLetterEntry]) -> bool:
        try:
            await self.store.write(batch)
        except DeadLetterError as exc:
            self._failed(exc)
            log.error("dead-letter write failed, holding %d entries: %s", len(batch), exc)
            return False
        except Exception as exc:
            # Not a store failure (a bug, an entry that cannot be encoded): still only a
            # failed write. Ending this task would end the run, and nothing else settles
            # rejections and given-up events. The traceback once per streak of failures.
            self._failed(exc)
            log.error("dead-letter write failed unexpectedly, holding %d entries: %r",
                      len(batch), exc, exc_info=not self._traced)
            self._traced = True
            return False
        self.last_error = None
        self._traced = False
        reasons = Counter(f"{entry.origin}/{entry.reason}" for entry in batch)
        log.warning("dead-lettered %d entries", len(batch),
                    extra={"fields": {"by_reason": dict(reasons)}})
        return True
