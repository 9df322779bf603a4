"""The per-sink dispatcher: queue, batching, retries, circuit breaker and accounting around a
dumb sink.

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

from pipeline.delivery.breaker import BreakerState, CircuitBreaker, Clock
from pipeline.model import SignedEvent
from pipeline.ops.metrics import CIRCUIT_STATE_VALUES, Metrics
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


class _CircuitOpen(Exception):
    """The breaker refused the attempt."""


class SinkDispatcher:
    """Feeds one sink from its own bounded queue; a slow sink only slows itself.

    `submit` is synchronous and never blocks: the source asks `has_room` / `wait_for_room`
    before reading more (back-pressure) unless `on_full = "drop"`.
    """

    def __init__(self, sink: Sink, settings: SinkSettings, metrics: Metrics, *,
                 on_settled: Settle, on_failed: Fail, clock: Clock = time.monotonic) -> None:
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
        # Labelled children looked up once: `labels()` per event was a visible hot spot.
        self._submitted = metrics.sink_submitted.labels(self.name)
        self._in_flight = metrics.sink_in_flight.labels(self.name)
        self._delivered = metrics.sink_delivered.labels(self.name)
        self._send_seconds = metrics.sink_send_seconds.labels(self.name)
        self.breaker = CircuitBreaker(settings.breaker, clock, self._on_transition)

    @property
    def queued(self) -> int:
        return len(self._queue)

    def has_room(self) -> bool:
        return self._settings.on_full == "drop" or len(self._queue) < self._settings.queue_size

    async def wait_for_room(self) -> None:
        await self._room.wait()

    def submit(self, event: SignedEvent) -> None:
        """Take one event; it is counted as submitted and settles exactly once."""
        self._submitted.inc()
        if len(self._queue) >= self._settings.queue_size and self._settings.on_full == "drop":
            self._metrics.sink_dropped.labels(self.name, "queue_full").inc()
            self._on_settled(event)
            return
        self._queue.append(event)
        self._in_flight.inc()
        self._after_append()

    def submit_many(self, events: Sequence[SignedEvent]) -> None:
        """Take a batch of events, as `submit` each, counted in one synchronous step."""
        if self._settings.on_full == "drop":
            for event in events:  # some of the batch may not fit: decide per event
                self.submit(event)
            return
        if not events:
            return
        self._submitted.inc(len(events))
        self._queue.extend(events)
        self._in_flight.inc(len(events))
        self._after_append()

    def _after_append(self) -> None:
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
        while True:
            try:
                await self._send_with_retries(batch)
            except _CircuitOpen:
                if self._should_block():
                    await self._wait_for_probe()
                    continue
                self._settle_refused(batch)
            except SinkError as exc:
                if exc.retriable and self.breaker.state is BreakerState.OPEN \
                        and self._should_block():
                    await self._wait_for_probe()
                    continue
                self._settle_failed(batch, exc)
            except Exception as exc:  # a sink bug must not kill its dispatcher or lose events
                log.exception("sink %s raised an unexpected error", self.name)
                self._settle_failed(batch, SinkError(repr(exc), retriable=False,
                                                     reason="unexpected_error"))
            else:
                self._settle_delivered(batch)
            return

    def _should_block(self) -> bool:
        # At shutdown, blocked events are dead-lettered rather than held past the deadline.
        return self._settings.on_open == "block" and not self._stopping.is_set()

    async def _wait_for_probe(self) -> None:
        await self._interruptible_sleep(max(self.breaker.cooldown_left(), 0.01))

    def _settle_delivered(self, batch: Sequence[SignedEvent]) -> None:
        self.last_error = None
        count = len(batch)
        self._delivered.inc(count)
        self._in_flight.dec(count)
        for event in batch:
            self._on_settled(event)

    def _settle_refused(self, batch: Sequence[SignedEvent]) -> None:
        """The breaker is open: fail fast to the dead-letter, or drop, as configured."""
        if self._settings.on_open != "drop":
            self._settle_failed(batch, SinkError(f"{self.name} circuit breaker is open",
                                                 retriable=False, reason="circuit_open"))
            return
        count = len(batch)
        self._metrics.sink_dropped.labels(self.name, "circuit_open").inc(count)
        self._metrics.sink_in_flight.labels(self.name).dec(count)
        for event in batch:
            self._on_settled(event)

    def _settle_failed(self, batch: Sequence[SignedEvent], exc: SinkError) -> None:
        count = len(batch)
        if exc.reason != "circuit_open":  # the open transition was logged once already
            self.last_error = str(exc)
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
            retry=retry_if_exception(self._worth_retrying),
            sleep=self._interruptible_sleep,
            before_sleep=lambda state: self._count_retry(state, len(batch)),
            reraise=True,
        )
        async for attempt in retrying:
            with attempt:
                await self._attempt(batch)

    def _worth_retrying(self, exc: BaseException) -> bool:
        return (isinstance(exc, SinkError) and exc.retriable
                and self.breaker.state is not BreakerState.OPEN)

    async def _attempt(self, batch: Sequence[SignedEvent]) -> None:
        if not self.breaker.try_acquire():
            raise _CircuitOpen
        try:
            await self._timed_send(batch)
        except SinkError as exc:
            # Only "the sink is unavailable" counts against it; a refused batch does not.
            if exc.retriable:
                self.breaker.record_failure()
            else:
                self.breaker.release()
            raise
        except BaseException:
            self.breaker.release()
            raise
        self.breaker.record_success()

    async def _timed_send(self, batch: Sequence[SignedEvent]) -> None:
        started = time.perf_counter()
        try:
            await self.sink.send(batch)
        finally:
            self._send_seconds.observe(
                time.perf_counter() - started)

    async def _interruptible_sleep(self, seconds: float) -> None:
        try:
            async with asyncio.timeout(seconds):
                await self._stopping.wait()
        except TimeoutError:
            pass

    def _on_transition(self, previous: BreakerState, to: BreakerState) -> None:
        self._metrics.sink_circuit_state.labels(self.name).set(CIRCUIT_STATE_VALUES[to.value])
        self._metrics.sink_circuit_transitions.labels(self.name, to.value).inc()
        log.warning("sink %s circuit breaker %s → %s", self.name, previous.value, to.value,
                    extra={"fields": {"sink": self.name, "from": previous.value,
                                      "to": to.value}})

    def _count_retry(self, state: RetryCallState, count: int) -> None:
        self._metrics.sink_retries.labels(self.name).inc(count)
        log.warning("sink %s: attempt %d failed, retrying: %s", self.name,
                    state.attempt_number, state.outcome.exception() if state.outcome else None)
