"""Contiguous settled offsets: a commit never passes an unsettled record."""

from __future__ import annotations

import asyncio

from hypothesis import given
from hypothesis import strategies as st

from pipeline.model import Position
from pipeline.sources.offsets import OffsetTracker


def pos(offset: int, partition: int = 0) -> Position:
    return Position("t", partition, offset)


def test_commit_point_waits_for_the_oldest_record() -> None:
    tracker = OffsetTracker()
    for offset in (10, 11, 12):
        tracker.track(pos(offset), parts=2)
    tracker.settle(pos(11))
    tracker.settle(pos(11))
    assert tracker.committable() == {}
    tracker.settle(pos(10))
    assert tracker.committable() == {}
    tracker.settle(pos(10))
    assert tracker.committable() == {("t", 0): 12}
    assert tracker.outstanding == 1


def test_partitions_are_independent() -> None:
    tracker = OffsetTracker()
    tracker.track(pos(5, 0), 1)
    tracker.track(pos(7, 1), 1)
    tracker.settle(pos(7, 1))
    assert tracker.committable() == {("t", 1): 8}


@given(st.permutations(list(range(30))))
def test_any_settle_order_ends_at_the_end(order: list[int]) -> None:
    tracker = OffsetTracker()
    for offset in range(30):
        tracker.track(pos(offset), 1)
    settled: set[int] = set()
    for offset in order:
        tracker.settle(pos(offset))
        settled.add(offset)
        prefix = 0
        while prefix in settled:
            prefix += 1
        assert tracker.committable().get(("t", 0), 0) == prefix
    assert tracker.outstanding == 0


async def test_wait_idle_returns_once_everything_settled() -> None:
    tracker = OffsetTracker()
    tracker.track(pos(1), 1)
    waiter = asyncio.create_task(tracker.wait_idle())
    await asyncio.sleep(0)
    assert not waiter.done()
    tracker.settle(pos(1))
    await asyncio.wait_for(waiter, 1)
