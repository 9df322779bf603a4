"""KafkaSource's reads against a fake consumer: nothing fetched is ever thrown away.

The real-broker version of these (a second replica joining while one is paused) is in
tests/faults/test_rebalance_while_paused.py; these pin the logic down step by step.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from aiokafka import TopicPartition
from prometheus_client import CollectorRegistry

from pipeline.delivery.ledger import Ledger
from pipeline.model import Record
from pipeline.settings import SourceSettings
from pipeline.sources.kafka import KafkaSource
from pipeline.sources.nonce_rebuild import PartitionRebuilds

TP = TopicPartition("events", 0)


@dataclass
class FakeMessage:
    offset: int
    value: bytes
    key: bytes | None = None
    headers: Sequence[tuple[str, bytes]] = ()
    timestamp: int = 0
    timestamp_type: int = 0


class FakeConsumer:
    """One partition holding `size` records; pause state belongs to the assignment, as in
    aiokafka: `reassign` hands the partition back unpaused."""

    def __init__(self, size: int) -> None:
        self.log = [FakeMessage(offset, b"%d" % offset) for offset in range(size)]
        self.position = 0
        self.paused: set[TopicPartition] = set()
        self.assigned = {TP}
        self.seeks: list[int] = []
        self.was_paused = asyncio.Event()
        self.was_rewound = asyncio.Event()

    def assignment(self) -> set[TopicPartition]:
        return set(self.assigned)

    def pause(self, *partitions: TopicPartition) -> None:
        self.paused.update(partitions)
        self.was_paused.set()

    def resume(self, *partitions: TopicPartition) -> None:
        self.paused.difference_update(partitions)

    def seek(self, tp: TopicPartition, offset: int) -> None:
        self.seeks.append(offset)
        self.position = offset
        self.was_rewound.set()

    def reassign(self) -> None:
        self.paused.clear()

    async def getmany(self, timeout_ms: int = 0, max_records: int | None = None
                      ) -> dict[TopicPartition, list[Any]]:
        await asyncio.sleep(0)
        if TP in self.paused or self.position >= len(self.log):
            return {}
        taken = self.log[self.position:self.position + 10]  # a fetch returns a few
        self.position += len(taken)
        return {TP: taken}


class Room:
    def __init__(self) -> None:
        self.open = asyncio.Event()
        self.open.set()
        self.pauses = 0

    def available(self) -> bool:
        return self.open.is_set()

    async def wait(self) -> None:
        await self.open.wait()

    def note_pause(self) -> None:
        self.pauses += 1


def source_with(consumer: FakeConsumer) -> tuple[KafkaSource, CollectorRegistry]:
    registry = CollectorRegistry()
    source = KafkaSource(SourceSettings(kind="kafka", topic="events"), Ledger(registry, ["s"]),
                         {"bootstrap_servers": "127.0.0.1:9"})
    source._consumer = consumer  # type: ignore[assignment]
    return source, registry


async def read(source: KafkaSource, room: Room, count: int) -> list[Record]:
    records: list[Record] = []
    async for batch in source.batches(room):  # type: ignore[arg-type]
        records.extend(batch)
        if len(records) >= count:
            break
    return records


async def test_records_returned_while_paused_after_a_rebalance_are_read_again() -> None:
    # Was: the partition came back unpaused from a rebalance, the keep-alive poll returned
    # its records and dropped them; reading resumed after them and the commit passed them.
    consumer = FakeConsumer(100)
    source, registry = source_with(consumer)
    room = Room()
    room.open.clear()  # the sinks are full from the start
    async with asyncio.timeout(20):
        reader = asyncio.create_task(read(source, room, 100))
        await consumer.was_paused.wait()
        consumer.reassign()  # the rebalance: the partition is back, no longer paused
        await consumer.was_rewound.wait()  # the keep-alive poll fetched them, and rewound
        assert consumer.seeks == [0]
        assert consumer.paused == {TP}, "a partition assigned while paused is paused again"
        room.open.set()
        records = await reader
    assert [r.position.offset for r in records] == list(range(100))
    assert room.pauses == 1
    assert registry.get_sample_value("govpipe_source_offset_gaps_total") == 0


async def test_a_consumer_that_skips_records_is_caught_and_read_again() -> None:
    consumer = FakeConsumer(60)
    source, registry = source_with(consumer)
    room = Room()
    source._guard.resume(TP, 0)
    first = await source._fetch(consumer, 0)  # type: ignore[arg-type]
    assert [r.position.offset for r in first] == list(range(10))
    consumer.position = 30  # records 10..29 consumed behind the source's back
    skipped = await source._fetch(consumer, 0)  # type: ignore[arg-type]
    assert skipped == []
    assert consumer.seeks == [10]
    async with asyncio.timeout(20):
        rest = await read(source, room, 50)
    assert [r.position.offset for r in rest] == list(range(10, 60))
    assert registry.get_sample_value("govpipe_source_offset_gaps_total") == 1


class HeldRebuild:
    """Stands in for the nonce rebuild (only `forget` is called here)."""

    def __init__(self) -> None:
        self.forgotten: set[TopicPartition] = set()

    def forget(self, revoked: set[TopicPartition]) -> None:
        self.forgotten |= revoked


async def test_a_partition_whose_nonces_are_rebuilding_is_read_only_afterwards() -> None:
    consumer = FakeConsumer(30)
    source, registry = source_with(consumer)
    rebuilds = PartitionRebuilds(HeldRebuild())  # type: ignore[arg-type]
    rebuilds.holding.add(TP)  # as `start` leaves it, but the rebalance handed TP unpaused
    source._rebuilds = rebuilds
    source._guard.resume(TP, 0)
    assert await source._fetch(consumer, 0) == []  # type: ignore[arg-type]
    assert (consumer.seeks, consumer.paused) == ([0], {TP})  # rewound, paused again
    assert source.health()[1] == "rebuilding the nonces of events-0"
    room = Room()
    room.open.clear()
    async with asyncio.timeout(20):
        paused = asyncio.create_task(source._paused_until_room(consumer, room))  # type: ignore[arg-type]
        await asyncio.sleep(0)
        room.open.set()
        await paused
    assert consumer.paused == {TP}, "room coming back does not resume a rebuilding partition"
    rebuilds.holding.clear()
    consumer.resume(TP)
    async with asyncio.timeout(20):
        records = await read(source, room, 30)
    assert [r.position.offset for r in records] == list(range(30))
    rebuilds.stop({TP})
    assert rebuilds.holding == set()
    assert registry.get_sample_value("govpipe_source_offset_gaps_total") == 0
