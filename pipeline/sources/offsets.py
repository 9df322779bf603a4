"""Which source positions are settled, and the highest contiguous one per partition.

A record is tracked when read, with the number of parts that must settle it (one per sink,
or one dead-letter write). A partition's commit point only moves past a record once it and
every record before it are settled, so a commit never skips an event that is nowhere.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field

from pipeline.model import Position

TopicAndPartition = tuple[str, int]  # (topic, partition); aiokafka's TopicPartition is one


@dataclass(slots=True)
class _Partition:
    epoch: int
    order: deque[int] = field(default_factory=deque)
    remaining: dict[int, int] = field(default_factory=dict)
    committable: int | None = None  # the next offset to read after the settled prefix
    last: int = -1  # the highest offset tracked


class OutOfOrder(RuntimeError):
    """A record was tracked at or below an offset already tracked: a bug upstream, which
    must stop the pipeline rather than let a commit pass an unsettled record."""


class OffsetTracker:
    """Counts outstanding parts per record and yields contiguous settled offsets."""

    def __init__(self) -> None:
        self._partitions: dict[TopicAndPartition, _Partition] = {}
        self._outstanding = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self._changed = asyncio.Event()

    @property
    def outstanding(self) -> int:
        """Records read and not yet settled (or settled behind an unsettled one)."""
        return self._outstanding

    def outstanding_in(self, partitions: Iterable[TopicAndPartition]) -> int:
        return sum(len(self._partitions[tp].order) for tp in partitions
                   if tp in self._partitions)

    def track(self, position: Position, parts: int) -> None:
        """Start tracking a record that `parts` settlements will complete (parts ≥ 1).

        Records of a partition must come in offset order: the commit point is the end of
        the settled prefix, so a record tracked out of order could be committed past.
        """
        key = (position.topic, position.partition)
        partition = self._partitions.get(key)
        if partition is not None and position.epoch < partition.epoch:
            return  # read before the partition was given up: its next owner re-reads it
        if partition is None or partition.epoch != position.epoch:
            if partition is not None:
                self._outstanding -= len(partition.order)
            partition = self._partitions[key] = _Partition(position.epoch)
        if position.offset <= partition.last:
            raise OutOfOrder(f"{key[0]}-{key[1]}: offset {position.offset} tracked after "
                             f"{partition.last}")
        partition.last = position.offset
        partition.order.append(position.offset)
        partition.remaining[position.offset] = parts
        self._outstanding += 1
        self._idle.clear()

    def settle(self, position: Position) -> None:
        """One part of the record at `position` is settled."""
        partition = self._partitions.get((position.topic, position.partition))
        if partition is None or partition.epoch != position.epoch:
            return  # the partition was revoked since: its new owner re-reads the record
        left = partition.remaining[position.offset] - 1
        partition.remaining[position.offset] = left
        if left:
            return
        while partition.order and partition.remaining[partition.order[0]] == 0:
            offset = partition.order.popleft()
            del partition.remaining[offset]
            partition.committable = offset + 1
            self._outstanding -= 1
        self._notify()

    def forget(self, partitions: Iterable[TopicAndPartition]) -> None:
        """Drop revoked partitions; their unsettled records are no longer ours."""
        for tp in partitions:
            partition = self._partitions.pop(tp, None)
            if partition is not None:
                self._outstanding -= len(partition.order)
        self._notify()

    def _notify(self) -> None:
        if self._outstanding == 0:
            self._idle.set()
        self._changed.set()
        self._changed = asyncio.Event()

    def committable(self) -> dict[TopicAndPartition, int]:
        """Per partition, the offset to commit (next to read) after its settled prefix."""
        return {tp: p.committable for tp, p in self._partitions.items()
                if p.committable is not None}

    async def wait_idle(self) -> None:
        """Return once every tracked record is settled."""
        await self._idle.wait()

    async def wait_partitions_idle(self, partitions: Iterable[TopicAndPartition]) -> None:
        """Return once every tracked record of `partitions` is settled."""
        wanted = list(partitions)
        while self.outstanding_in(wanted):
            await self._changed.wait()
