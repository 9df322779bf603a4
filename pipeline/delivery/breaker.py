"""A small asyncio circuit breaker of our own, one per sink.

closed → open after `failure_threshold` consecutive failures → half-open once `cooldown_s`
has passed on the injected monotonic clock, admitting exactly one probe at a time → closed
after `success_threshold` probe successes; any probe failure opens it again. No lock is held
across an await: every method is synchronous and the event loop serialises callers.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from enum import StrEnum

from pipeline.settings import BreakerSettings

MonotonicClock = Callable[[], float]  # seconds, never going back


class BreakerState(StrEnum):
    CLOSED = "closed"
    HALF_OPEN = "half_open"
    OPEN = "open"


Transition = Callable[[BreakerState, BreakerState], None]


class CircuitBreaker:
    """Decides whether a send may be attempted, from the outcomes of earlier ones."""

    def __init__(self, settings: BreakerSettings, clock: MonotonicClock = time.monotonic,
                 on_transition: Transition | None = None) -> None:
        self._settings = settings
        self._clock = clock
        self._on_transition = on_transition
        self._state = BreakerState.CLOSED
        self._failures = 0
        self._successes = 0
        self._opened_at = 0.0
        self._probe_in_flight = False

    @property
    def state(self) -> BreakerState:
        """The current state, moving open → half-open once the cooldown has passed."""
        if self._state is BreakerState.OPEN and self.cooldown_left() == 0:
            self._move(BreakerState.HALF_OPEN)
        return self._state

    def cooldown_left(self) -> float:
        """Seconds until an open breaker admits a probe (0 when not open)."""
        if self._state is not BreakerState.OPEN:
            return 0.0
        return max(0.0, self._opened_at + self._settings.cooldown_s - self._clock())

    def try_acquire(self) -> bool:
        """May a send start now? In half-open, only one probe at a time is admitted."""
        state = self.state
        if state is BreakerState.CLOSED:
            return True
        if state is BreakerState.HALF_OPEN and not self._probe_in_flight:
            self._probe_in_flight = True
            return True
        return False

    def record_success(self) -> None:
        self._probe_in_flight = False
        if self._state is BreakerState.HALF_OPEN:
            self._successes += 1
            if self._successes >= self._settings.success_threshold:
                self._move(BreakerState.CLOSED)
        self._failures = 0

    def record_failure(self) -> None:
        self._probe_in_flight = False
        if self._state is BreakerState.HALF_OPEN:
            self._move(BreakerState.OPEN)
            return
        self._failures += 1
        threshold = self._settings.failure_threshold
        if self._state is BreakerState.CLOSED and self._failures >= threshold:
            self._move(BreakerState.OPEN)

    def release(self) -> None:
        """A send ended with neither verdict (cancelled): free the probe slot."""
        self._probe_in_flight = False

    def _move(self, to: BreakerState) -> None:
        previous, self._state = self._state, to
        self._failures = 0
        self._successes = 0
        if to is BreakerState.OPEN:
            self._opened_at = self._clock()
        if self._on_transition is not None:
            self._on_transition(previous, to)
