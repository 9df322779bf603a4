"""Which source positions are settled, and the highest contiguous one per partition.

A record is tracked when read, with the number of parts that must settle it (one per sink,
or one dead-letter write). A partition's commit point only moves past a record once it and
every record before it are settled, so a commit never skips an event that is nowhere.
"""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass, field

from pipeline.model import Position

TopicPartition = tuple[str, int]


@dataclass(slots=True)
class _Partition:
    order: deque[int] = field(default_factory=deque)
    remaining: dict[int, int] = field(default_factory=dict)
    committable: int | None = None  # the next offset to read after the settled prefix


class OffsetTracker:
    """Counts outstanding parts per record and yields contiguous settled offsets."""

    def __init__(self) -> None:
        self._partitions: dict[TopicPartition, _Partition] = {}
        self._outstanding = 0
        self._idle = asyncio.Event()
        self._idle.set()

    @property
    def outstanding(self) -> int:
        """Records read and not yet settled."""
        return self._outstanding

    def track(self, position: Position, parts: int) -> None:
        """Start tracking a record that `parts` settlements will complete (parts ≥ 1)."""
        partition = self._partitions.setdefault((position.topic, position.partition),
                                                _Partition())
        partition.order.append(position.offset)
        partition.remaining[position.offset] = parts
        self._outstanding += 1
        self._idle.clear()

    def settle(self, position: Position) -> None:
        """One part of the record at `position` is settled."""
        partition = self._partitions[(position.topic, position.partition)]
        left = partition.remaining[position.offset] - 1
        partition.remaining[position.offset] = left
        if left:
            return
        while partition.order and partition.remaining[partition.order[0]] == 0:
            offset = partition.order.popleft()
            del partition.remaining[offset]
            partition.committable = offset + 1
            self._outstanding -= 1
        if self._outstanding == 0:
            self._idle.set()

    def committable(self) -> dict[TopicPartition, int]:
        """Per partition, the offset to commit (next to read) after its settled prefix."""
        return {tp: p.committable for tp, p in self._partitions.items()
                if p.committable is not None}

    async def wait_idle(self) -> None:
        """Return once every tracked record is settled."""
        await self._idle.wait()
