"""The per-sink dispatcher: queue, batching, retries and accounting around a dumb sink.

Accounting (SPEC §5) is updated synchronously on the event loop where an event changes
state, so `submitted = delivered + Σfailed + Σdropped + in_flight` holds at every instant.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable, Sequence

from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_after_attempt,
    wait_random_exponential,
)
from tenacity.stop import stop_base

from pipeline.metrics import Metrics
from pipeline.model import SignedEvent
from pipeline.settings import SinkSettings
from sinks.base import Sink, SinkError

log = logging.getLogger(__name__)

Settle = Callable[[SignedEvent], None]
Fail = Callable[[str, SignedEvent, SinkError], None]


class _StopOnEvent(stop_base):
    """Stop retrying once shutdown has been requested."""

    def __init__(self, event: asyncio.Event) -> None:
        self._event = event

    def __call__(self, retry_state: RetryCallState) -> bool:
        return self._event.is_set()


def _retriable(exc: BaseException) -> bool:
    return isinstance(exc, SinkError) and exc.retriable


class SinkDispatcher:
    """Feeds one sink from its own bounded queue; a slow sink only slows itself.

    `submit` is synchronous and never blocks: the source asks `has_room` / `wait_for_room`
    before reading more (back-pressure) unless `on_full = "drop"`.
    """

    def __init__(self, sink: Sink, settings: SinkSettings, metrics: Metrics, *,
                 on_settled: Settle, on_failed: Fail) -> None:
        self.sink = sink
        self.name = sink.name
        self._settings = settings
        self._metrics = metrics
        self._on_settled = on_settled
        self._on_failed = on_failed
        self._queue: deque[SignedEvent] = deque()
        self._wake = asyncio.Event()
        self._room = asyncio.Event()
        self._room.set()
        self._closing = False
        self._stopping = asyncio.Event()
        self.last_error: str | None = None
        metrics.register_sink(self.name)

    @property
    def queued(self) -> int:
        return len(self._queue)

    def has_room(self) -> bool:
        return self._settings.on_full == "drop" or len(self._queue) < self._settings.queue_size

    async def wait_for_room(self) -> None:
        await self._room.wait()

    def submit(self, event: SignedEvent) -> None:
        """Take one event; it is counted as submitted and settles exactly once."""
        self._metrics.sink_submitted.labels(self.name).inc()
        if len(self._queue) >= self._settings.queue_size and self._settings.on_full == "drop":
            self._metrics.sink_dropped.labels(self.name, "queue_full").inc()
            self._on_settled(event)
            return
        self._queue.append(event)
        self._metrics.sink_in_flight.labels(self.name).inc()
        if len(self._queue) >= self._settings.queue_size:
            self._room.clear()
        self._wake.set()

    def close(self) -> None:
        """No more events will come; `run` returns once the queue is empty."""
        self._closing = True
        self._wake.set()

    def stop_retrying(self) -> None:
        """Shutdown deadline: cut retry waits short and make the current batch final."""
        self._stopping.set()

    async def run(self) -> None:
        while self._queue or not self._closing:
            if not self._queue:
                self._wake.clear()
                await self._wake.wait()
                continue
            batch = [self._queue.popleft()
                     for _ in range(min(self._settings.batch_size, len(self._queue)))]
            if len(self._queue) < self._settings.queue_size:
                self._room.set()
            await self._deliver(batch)

    async def _deliver(self, batch: Sequence[SignedEvent]) -> None:
        try:
            await self._send_with_retries(batch)
        except SinkError as exc:
            self._settle_failed(batch, exc)
        except Exception as exc:  # a sink bug must not kill its dispatcher or lose the batch
            log.exception("sink %s raised an unexpected error", self.name)
            self._settle_failed(batch, SinkError(repr(exc), retriable=False,
                                                 reason="unexpected_error"))
        else:
            self.last_error = None
            count = len(batch)
            self._metrics.sink_delivered.labels(self.name).inc(count)
            self._metrics.sink_in_flight.labels(self.name).dec(count)
            for event in batch:
                self._on_settled(event)

    def _settle_failed(self, batch: Sequence[SignedEvent], exc: SinkError) -> None:
        self.last_error = str(exc)
        count = len(batch)
        log.error("sink %s failed %d events: %s", self.name, count, exc,
                  extra={"fields": {"sink": self.name, "reason": exc.reason}})
        self._metrics.sink_failed.labels(self.name, exc.reason).inc(count)
        self._metrics.sink_in_flight.labels(self.name).dec(count)
        for event in batch:
            self._on_failed(self.name, event, exc)

    async def _send_with_retries(self, batch: Sequence[SignedEvent]) -> None:
        retry = self._settings.retry
        retrying = AsyncRetrying(
            stop=stop_after_attempt(retry.max_attempts) | _StopOnEvent(self._stopping),
            wait=wait_random_exponential(multiplier=retry.initial_backoff_s,
                                         max=retry.max_backoff_s),
            retry=retry_if_exception(_retriable),
            sleep=self._interruptible_sleep,
            before_sleep=lambda state: self._count_retry(state, len(batch)),
            reraise=True,
        )
        async for attempt in retrying:
            with attempt:
                await self._timed_send(batch)

    async def _timed_send(self, batch: Sequence[SignedEvent]) -> None:
        started = time.perf_counter()
        try:
            await self.sink.send(batch)
        finally:
            self._metrics.sink_send_seconds.labels(self.name).observe(
                time.perf_counter() - started)

    async def _interruptible_sleep(self, seconds: float) -> None:
        try:
            async with asyncio.timeout(seconds):
                await self._stopping.wait()
        except TimeoutError:
            pass

    def _count_retry(self, state: RetryCallState, count: int) -> None:
        self._metrics.sink_retries.labels(self.name).inc(count)
        log.warning("sink %s: attempt %d failed, retrying: %s", self.name,
                    state.attempt_number, state.outcome.exception() if state.outcome else None)
