"""The circuit breaker's state machine, on a fake monotonic clock."""

from __future__ import annotations

from pipeline.delivery.breaker import BreakerState, CircuitBreaker
from pipeline.settings import BreakerSettings


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def make(threshold: int = 3, cooldown: float = 10, successes: int = 2) -> tuple[
        CircuitBreaker, FakeClock, list[tuple[str, str]]]:
    clock = FakeClock()
    moves: list[tuple[str, str]] = []
    breaker = CircuitBreaker(
        BreakerSettings(failure_threshold=threshold, cooldown_s=cooldown,
                        success_threshold=successes),
        clock, on_transition=lambda a, b: moves.append((a.value, b.value)))
    return breaker, clock, moves


def test_opens_after_consecutive_failures_only() -> None:
    breaker, _, moves = make(threshold=3)
    for _ in range(2):
        breaker.record_failure()
    breaker.record_success()  # resets the streak
    for _ in range(2):
        breaker.record_failure()
    assert breaker.state is BreakerState.CLOSED
    breaker.record_failure()
    assert breaker.state is BreakerState.OPEN
    assert not breaker.try_acquire()
    assert moves == [("closed", "open")]


def test_half_open_admits_exactly_one_probe_after_cooldown() -> None:
    breaker, clock, _ = make(threshold=1, cooldown=10)
    breaker.record_failure()
    clock.now += 9.9
    assert breaker.cooldown_left() > 0
    assert not breaker.try_acquire()
    clock.now += 0.1
    assert breaker.state is BreakerState.HALF_OPEN
    assert breaker.try_acquire()
    assert not breaker.try_acquire()  # one probe in flight at a time
    breaker.record_success()
    assert breaker.try_acquire()


def test_closes_after_k_probe_successes() -> None:
    breaker, clock, moves = make(threshold=1, cooldown=5, successes=2)
    breaker.record_failure()
    clock.now += 5
    assert breaker.try_acquire()
    breaker.record_success()
    assert breaker.state is BreakerState.HALF_OPEN
    assert breaker.try_acquire()
    breaker.record_success()
    assert breaker.state is BreakerState.CLOSED
    assert moves == [("closed", "open"), ("open", "half_open"), ("half_open", "closed")]


def test_probe_failure_reopens_and_restarts_the_cooldown() -> None:
    breaker, clock, moves = make(threshold=1, cooldown=5)
    breaker.record_failure()
    clock.now += 5
    assert breaker.try_acquire()
    breaker.record_failure()
    assert breaker.state is BreakerState.OPEN
    assert breaker.cooldown_left() == 5
    assert moves[-1] == ("half_open", "open")


def test_release_frees_the_probe_slot() -> None:
    breaker, clock, _ = make(threshold=1, cooldown=1)
    breaker.record_failure()
    clock.now += 1
    assert breaker.try_acquire()
    breaker.release()
    assert breaker.try_acquire()
