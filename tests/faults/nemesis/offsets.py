"""Watching the group's committed offsets and the input topic's end offsets."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable
from typing import TypeVar

from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError
from aiokafka.structs import TopicPartition

from tests.faults.nemesis.clients import stop_quietly

KAFKA_TIMEOUT_S = 5.0
T = TypeVar("T")


async def answer(request: Awaitable[T]) -> T | None:
    """The broker's answer, or None while it cannot answer (down, paused, restarting)."""
    try:
        async with asyncio.timeout(KAFKA_TIMEOUT_S):
            return await request
    except (KafkaError, TimeoutError, OSError):
        return None


class OffsetWatch:
    """The group's committed offsets (polled during the run; the highest ever seen per
    partition is kept) and the topic's end offsets, through long-lived clients that
    reconnect by themselves after a broker restart."""

    def __init__(self, bootstrap: str, topic: str, group: str, partitions: int) -> None:
        self._group = group
        self._partitions = [TopicPartition(topic, n) for n in range(partitions)]
        self._admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=5_000)
        self._consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None,
                                          enable_auto_commit=False, request_timeout_ms=5_000)
        self.highest: dict[int, int] = {}
        self.polls = 0

    async def start(self) -> None:
        await self._admin.start()
        await self._consumer.start()

    async def close(self) -> None:
        await stop_quietly(self._consumer)
        await stop_quietly(self._admin)

    async def committed(self) -> dict[int, int] | None:
        """Per partition, or None while the broker cannot answer."""
        offsets = await answer(self._admin.list_consumer_group_offsets(self._group))
        if offsets is None:
            return None
        found = {tp.partition: meta.offset for tp, meta in offsets.items() if meta.offset >= 0}
        for partition, offset in found.items():
            self.highest[partition] = max(offset, self.highest.get(partition, -1))
        self.polls += 1
        return found

    async def ends(self) -> dict[int, int] | None:
        ends = await answer(self._consumer.end_offsets(self._partitions))
        if ends is None:
            return None
        return {tp.partition: int(offset) for tp, offset in ends.items()}

    async def poll_periodically(self, stop: asyncio.Event, interval_s: float = 1.0) -> None:
        while not stop.is_set():
            await self.committed()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), interval_s)

    async def caught_up(self) -> tuple[bool, dict[int, int] | None, dict[int, int] | None]:
        """Whether every partition's committed offset is at its end, and both maps."""
        committed, ends = await self.committed(), await self.ends()
        if committed is None or ends is None:
            return False, committed, ends
        return all(committed.get(p, 0) >= end for p, end in ends.items()), committed, ends
