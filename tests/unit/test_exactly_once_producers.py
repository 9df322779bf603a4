"""The exactly-once committer's producers: retired ones are stopped together, so a commit
after k failed partitions waits one stop timeout, not k (a revocation must fit the
rebalance timeout)."""

from __future__ import annotations

import asyncio
from typing import Any

from aiokafka import TopicPartition

from pipeline.exactly_once.producers import TransactionalProducers


class StopsTogether:
    """A producer whose stop returns only once every producer of its group is stopping."""

    def __init__(self, barrier: asyncio.Barrier, stopped: list[str], **options: Any) -> None:
        self.options = options
        self._barrier = barrier
        self._stopped = stopped

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        await self._barrier.wait()
        self._stopped.append(self.options["transactional_id"])


async def test_retired_producers_are_stopped_together() -> None:
    barrier, stopped = asyncio.Barrier(2), []
    producers = TransactionalProducers(
        {}, "g", timeout_s=2.0,
        producer_class=lambda **o: StopsTogether(barrier, stopped, **o))
    for partition in (0, 1):
        tp = TopicPartition("in", partition)
        await producers.get(tp)
        producers.retire(tp)
    await producers.close_retired()
    # One at a time, the first stop would wait for the second until its timeout: neither
    # would finish.
    assert sorted(stopped) == ["govpipe-g-in-0", "govpipe-g-in-1"]


async def test_a_producer_is_started_once_and_replaced_after_retiring() -> None:
    started: list[StopsTogether] = []

    def make(**options: Any) -> StopsTogether:
        started.append(StopsTogether(asyncio.Barrier(1), [], **options))
        return started[-1]

    producers = TransactionalProducers({"acks": "all"}, "g", 1.0, make)
    tp = TopicPartition("in", 3)
    first = await producers.get(tp)
    assert await producers.get(tp) is first
    producers.retire(tp)
    assert await producers.get(tp) is not first
    assert [p.options for p in started] == [
        {"acks": "all", "transactional_id": "govpipe-g-in-3"}] * 2
    await producers.aclose()
