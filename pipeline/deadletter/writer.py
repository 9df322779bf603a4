"""The writer that feeds a dead-letter store.

An entry is made for every rejected record (origin "source") and every event a sink gave
up on (origin = the sink). Each entry carries its record's position, the acknowledgement
handle: once the entry is durably written, the ledger settles that position. A failed
write holds the position and is retried, never dropped.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Callable, Sequence

from pipeline.deadletter.entry import DeadLetterEntry
from pipeline.deadletter.store import (
    DeadLetterError,
    DeadLetterFull,
    DeadLetterRefused,
    DeadLetterStore,
)
from pipeline.delivery.capacity import Capacity
from pipeline.delivery.ledger import Ledger
from pipeline.model import Rejection, SignedEvent
from pipeline.ops.health import Status
from pipeline.ops.metrics import Metrics
from sinks.base import SinkError

log = logging.getLogger(__name__)

WRITE_BATCH = 1000
REFUSED_LOG_EVERY_S = 60.0


class DeadLetterWriter:
    """Batches entries to a store, retrying failed writes until they succeed.

    Taking entries never blocks. `run` is the background task; `close` makes it return
    once nothing is pending (a write that keeps failing is retried until the task is
    cancelled). The backlog is bounded by back-pressure, as sink queues are: past
    `max_pending` entries `has_room` is false and the source stops reading (entries from
    events already in the sinks' queues still come; the bound is that much soft).
    `last_error` is the failure of the last write, None once a write succeeds.

    A store at its size cap (`DeadLetterFull`) makes the writer `full`: no room at all, so
    the source stops reading; the entries it holds are tried again every
    `retry_backoff_s`, and the first write that takes them all ends it. Entries the store
    did take are settled as usual.
    """

    def __init__(self, store: DeadLetterStore, ledger: Ledger, metrics: Metrics, *,
                 retry_backoff_s: float = 1.0, max_pending: int = 10_000,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.store = store
        self._ledger = ledger
        self._metrics = metrics
        self._backoff_s = retry_backoff_s
        self._pending: list[DeadLetterEntry] = []
        self._capacity = Capacity(max_pending)
        self._wake = asyncio.Event()
        self._closing = False
        self.last_error: str | None = None
        self.full: str | None = None  # why the store takes nothing more, while it is full
        self._traced = False  # the current streak of failed writes logged a traceback
        self._clock = clock
        self._refused_logged: float | None = None  # when a refusal was last logged

    @property
    def pending(self) -> int:
        return len(self._pending)

    def has_room(self) -> bool:
        return self.full is None and self._capacity.fits(len(self._pending))

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
        self._capacity.update(len(self._pending), blocked=self.full is not None)

    def recover(self) -> list[str]:
        """Before the first write: repair what a crash left half-written."""
        return self.store.recover()

    def health(self) -> tuple[Status, str]:
        problem = self.last_error or self.store.check()
        if problem:
            return Status.UNHEALTHY, problem
        if self.full is not None:
            return Status.DEGRADED, (f"full: {self.full}; the source has stopped reading "
                                     f"({len(self._pending)} entries held) until entries are "
                                     "replayed and their files removed")
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
            written = await self._write(batch)
            if written:
                del self._pending[:written]
                self._changed()
                self._ledger.dead_lettered(batch[:written])
            if written < len(batch):
                await asyncio.sleep(self._backoff_s)  # a retry wait; cancelled at shutdown

    async def _write(self, batch: list[DeadLetterEntry]) -> int:
        """How many entries of `batch` the store took (all of them, or the few that fit
        under its cap, or none after a failure)."""
        try:
            await self.store.write(batch)
        except DeadLetterFull as exc:
            self._became_full(str(exc))
            written = exc.written
        except DeadLetterRefused as exc:
            self._failed(exc)
            self._log_refused(exc, len(batch))
            return 0
        except DeadLetterError as exc:
            self._failed(exc)
            log.error("dead-letter write failed, holding %d entries: %s", len(batch), exc)
            return 0
        except Exception as exc:
            # Not a store failure (a bug, an entry that cannot be encoded): still only a
            # failed write. Ending this task would end the run, and nothing else settles
            # rejections and given-up events. The traceback once per streak of failures.
            self._failed(exc)
            log.error("dead-letter write failed unexpectedly, holding %d entries: %r",
                      len(batch), exc, exc_info=not self._traced)
            self._traced = True
            return 0
        else:
            written = len(batch)
            self._has_room_again()
        self.last_error = None
        self._traced = False
        if written:
            reasons = Counter(f"{entry.origin}/{entry.reason}" for entry in batch[:written])
            log.warning("dead-lettered %d entries", written,
                        extra={"fields": {"by_reason": dict(reasons)}})
        return written

    def _log_refused(self, exc: DeadLetterRefused, held: int) -> None:
        """A configuration error, retried every `retry_backoff_s`: logged once a minute."""
        now = self._clock()
        if self._refused_logged is None or now - self._refused_logged >= REFUSED_LOG_EVERY_S:
            self._refused_logged = now
            log.error("dead-letter write refused, holding %d entries until the destination "
                      "is fixed: %s", held, exc)

    def _became_full(self, why: str) -> None:
        if self.full is None:
            self._metrics.deadletter_cap_reached.inc()
            self._metrics.deadletter_full.set(1)
            log.error("dead-letter full, the source stops reading until room is made: %s",
                      why)
        self.full = why
        self._changed()

    def _has_room_again(self) -> None:
        if self.full is not None:
            self.full = None
            self._metrics.deadletter_full.set(0)
            self._changed()
            log.warning("dead-letter has room again; the source reads on")
