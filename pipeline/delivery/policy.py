"""How hard one sink is tried: retries and the circuit breaker, as one policy.

A batch is attempted while the breaker admits it; a retriable `SinkError` is retried with
exponential backoff and full jitter, up to `retry.max_attempts`, unless the breaker has
opened meanwhile; a non-retriable one is final at once. Only "the sink is unavailable"
(a retriable error) counts against the breaker; a refused batch does not, and a send that
delivered all but some refused events (`SinkError.only`) counts as a success. Waits end early
once `stop_retrying` is called (shutdown), making the current attempt the last.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_after_attempt,
    wait_random_exponential,
)
from tenacity.stop import stop_base

from pipeline.delivery.breaker import BreakerState, CircuitBreaker, MonotonicClock
from pipeline.delivery.ledger import Ledger
from pipeline.settings import SinkSettings
from sinks.base import SinkError

log = logging.getLogger(__name__)

Send = Callable[[], Awaitable[None]]


class CircuitOpen(Exception):
    """The breaker refused the attempt."""


class _StopOnEvent(stop_base):
    """Stop retrying once shutdown has been requested."""

    def __init__(self, event: asyncio.Event) -> None:
        self._event = event

    def __call__(self, retry_state: RetryCallState) -> bool:
        return self._event.is_set()


class DeliveryPolicy:
    """Retries and breaker for the sink `name`; counts retries, breaker moves and send
    times in the ledger."""

    def __init__(self, name: str, settings: SinkSettings, ledger: Ledger,
                 clock: MonotonicClock = time.monotonic) -> None:
        self._name = name
        self._settings = settings
        self._ledger = ledger
        self._stopping = asyncio.Event()
        self.breaker = CircuitBreaker(settings.breaker, clock, self._on_transition)

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    def stop_retrying(self) -> None:
        """Shutdown: cut waits short and make the current attempt the last."""
        self._stopping.set()

    async def deliver(self, send: Send, count: int) -> None:
        """Send (`count` events) until it succeeds; raise the last `SinkError`, or
        `CircuitOpen` when the breaker refuses."""
        retry = self._settings.retry
        retrying = AsyncRetrying(
            stop=stop_after_attempt(retry.max_attempts) | _StopOnEvent(self._stopping),
            wait=wait_random_exponential(multiplier=retry.initial_backoff_s,
                                         max=retry.max_backoff_s),
            retry=retry_if_exception(self._worth_retrying),
            sleep=self.sleep,
            before_sleep=lambda state: self._count_retry(state, count),
            reraise=True,
        )
        async for attempt in retrying:
            with attempt:
                await self._attempt(send, count)

    def unavailable(self) -> bool:
        """Is the breaker open (the sink known to be down)?"""
        return self.breaker.state is BreakerState.OPEN

    async def wait_for_probe(self) -> None:
        """Until the breaker would admit a probe (or shutdown)."""
        await self.sleep(max(self.breaker.cooldown_left(), 0.01))

    async def sleep(self, seconds: float) -> None:
        """A wait that ends early at shutdown."""
        try:
            async with asyncio.timeout(seconds):
                await self._stopping.wait()
        except TimeoutError:
            pass

    def _worth_retrying(self, exc: BaseException) -> bool:
        return isinstance(exc, SinkError) and exc.retriable and not self.unavailable()

    async def _attempt(self, send: Send, count: int) -> None:
        if not self.breaker.try_acquire():
            raise CircuitOpen
        started = time.perf_counter()
        try:
            await send()
        except SinkError as exc:
            self._judge(exc, count)
            raise
        except BaseException:
            self.breaker.release()
            raise
        finally:
            self._ledger.sent(self._name, time.perf_counter() - started)
        self.breaker.record_success()

    def _judge(self, exc: SinkError, count: int) -> None:
        """The breaker's verdict on a failed send of `count` events."""
        if exc.retriable:
            self.breaker.record_failure()
        elif exc.only is not None and len(exc.only) < count:
            # The sink took the others: it is up. Records it refuses (too large) must
            # neither open the breaker for the good ones nor keep it half-open.
            self.breaker.record_success()
        else:
            self.breaker.release()

    def _on_transition(self, previous: BreakerState, to: BreakerState) -> None:
        self._ledger.circuit_changed(self._name, to.value)
        log.warning("sink %s circuit breaker %s → %s", self._name, previous.value, to.value,
                    extra={"fields": {"sink": self._name, "from": previous.value,
                                      "to": to.value}})

    def _count_retry(self, state: RetryCallState, count: int) -> None:
        self._ledger.retried(self._name, count)
        log.warning("sink %s: attempt %d failed, retrying: %s", self._name,
                    state.attempt_number, state.outcome.exception() if state.outcome else None)
