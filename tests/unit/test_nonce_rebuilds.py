"""The background nonce rebuilds of newly assigned partitions: they fail closed (paused,
retried) and never leave a partition paused for good, whatever ends them."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

from aiokafka import TopicPartition

from pipeline.sources.nonce_rebuild import PartitionRebuilds

P0, P1 = TopicPartition("events", 0), TopicPartition("events", 1)


class Consumer:
    def __init__(self) -> None:
        self.assigned = {P0, P1}
        self.paused: set[TopicPartition] = set()
        self.resumed = asyncio.Event()

    def assignment(self) -> set[TopicPartition]:
        return set(self.assigned)

    def pause(self, *partitions: TopicPartition) -> None:
        self.paused.update(partitions)

    def resume(self, *partitions: TopicPartition) -> None:
        self.paused.difference_update(partitions)
        self.resumed.set()

    async def position(self, tp: TopicPartition) -> int:
        return 0


class Rebuild:
    """Fails with `errors` in turn, then holds each run until `release`."""

    def __init__(self, *errors: Exception) -> None:
        self.errors = list(errors)
        self.release = asyncio.Event()
        self.runs: list[set[TopicPartition]] = []
        self.running = asyncio.Event()
        self.forgotten: set[TopicPartition] = set()

    async def run(self, resume_at: Mapping[TopicPartition, int]) -> int:
        self.runs.append(set(resume_at))
        self.running.set()
        if self.errors:
            raise self.errors.pop(0)
        await self.release.wait()
        return 0

    def forget(self, revoked: set[TopicPartition]) -> None:
        self.forgotten |= revoked


async def test_an_unexpected_error_is_retried_not_left_paused() -> None:
    rebuild, consumer = Rebuild(ValueError("a bug")), Consumer()
    rebuilds = PartitionRebuilds(rebuild)  # type: ignore[arg-type]
    rebuild.release.set()
    rebuilds.start(consumer, {P0}, lambda: True)  # type: ignore[arg-type]
    async with asyncio.timeout(20):
        await consumer.resumed.wait()
    assert consumer.paused == set()
    assert rebuilds.holding == set()
    assert len(rebuild.runs) == 2


async def test_partitions_kept_when_others_are_revoked_are_rebuilt_again() -> None:
    rebuild, consumer = Rebuild(), Consumer()
    rebuilds = PartitionRebuilds(rebuild)  # type: ignore[arg-type]
    rebuilds.start(consumer, {P0, P1}, lambda: True)  # type: ignore[arg-type]
    await rebuild.running.wait()
    consumer.assigned = {P1}
    rebuilds.stop({P0})
    assert rebuild.forgotten == {P0}
    assert rebuilds.holding == {P1}
    rebuild.release.set()
    async with asyncio.timeout(20):
        await consumer.resumed.wait()
    assert P1 not in consumer.paused
    assert rebuilds.holding == set()
    assert rebuild.runs[-1] == {P1}
    await rebuilds.aclose()
