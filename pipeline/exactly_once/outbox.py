"""The records waiting for the transaction of their input partition.

The Kafka sink's events and the dead-letter entries are staged here (their part of the
record settles at once) and written by the transaction that commits the offset past them.
Each item keeps the bytes it was staged with, so a transaction tried again after an abort
writes the same records.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from pipeline.cloudevents.codec import decode_object
from pipeline.deadletter.entry import DeadLetterEntry
from pipeline.model import Position, SignedEvent
from pipeline.sources.offsets import TopicAndPartition

Headers = list[tuple[str, bytes]]


@dataclass(frozen=True, slots=True)
class Staged:
    """One Kafka record of an input position: an event for the sink's topic (`event` set,
    `sink` names the sink; kept without its attributes, see `kept_event`) or a dead-letter
    entry (`origin` set)."""

    position: Position
    topic: str
    key: bytes | None
    value: bytes
    headers: Headers
    event: SignedEvent | None = None
    sink: str | None = None
    origin: str | None = None
    # A dead-letter entry written whole: what its summary is made from, should the topic
    # refuse it (None once it is the summary).
    entry: DeadLetterEntry | None = None


def kept_event(event: SignedEvent) -> SignedEvent:
    """`event` as a staged record keeps it: without its attributes, which its body holds.
    The parsed attributes were most of a staged record's memory (about 2.4 KB of 4 KB for
    a typical event), for up to `MAX_STAGED` records; counting needs the event alone, and
    only a record the topic refuses needs them back (`whole_event`)."""
    return SignedEvent(event.id, _NOT_KEPT, event.body, event.position, event.partition_key)


def whole_event(event: SignedEvent) -> SignedEvent:
    """A staged `event` with its attributes read back from its body (the signed
    CloudEvent, as govpipe wrote it: exact, whatever the content mode)."""
    return SignedEvent(event.id, decode_object(event.body, len(event.body)), event.body,
                       event.position, event.partition_key)


_NOT_KEPT: Mapping[str, Any] = MappingProxyType({})


class Outbox:
    """Staged records per input partition, taken in offset order up to a commit point.

    Each partition's records are kept sorted by offset (stable: records of one offset in
    the order they were staged), so finding a commit point is a binary search and a
    commit takes its prefix: a backlog of n records costs a transaction O(log n) plus what
    it writes, not a scan of all n."""

    def __init__(self) -> None:
        self._staged: dict[TopicAndPartition, _Partition] = {}
        self._epochs: dict[TopicAndPartition, int] = {}
        self.size = 0  # items staged, all partitions

    def stage(self, items: Sequence[Staged]) -> list[Staged]:
        """Keep `items` for their partitions' next transactions; returns those refused
        because their partition was given up since they were read (their new owner
        writes them)."""
        stale: list[Staged] = []
        for item in items:
            key = (item.position.topic, item.position.partition)
            if item.position.epoch < self._epochs.get(key, 0):
                stale.append(item)
            else:
                partition = self._staged.get(key)
                if partition is None:
                    partition = self._staged[key] = _Partition()
                partition.add(item)
                self.size += 1
        return stale

    def before(self, partition: TopicAndPartition, offset: int, start: int = 0
               ) -> list[Staged]:
        """The items of `partition` from `start` to below `offset`, in offset order (left
        staged)."""
        staged = self._staged.get(partition)
        if staged is None:
            return []
        items = staged.in_order()
        return items[staged.index(start):staged.index(offset)]

    def commit_point(self, partition: TopicAndPartition, offset: int, most: int) -> int:
        """`offset`, or an earlier one below which at most `most` items of `partition`
        are staged (the offset of the first item past them)."""
        staged = self._staged.get(partition)
        if staged is None or staged.index(offset) <= most:
            return offset
        return staged.items[most].position.offset

    def release(self, partition: TopicAndPartition, offset: int) -> list[Staged]:
        """Remove and return the items of `partition` below `offset` (committed)."""
        staged = self._staged.get(partition)
        if staged is None:
            return []
        count = staged.index(offset)
        items = staged.items[:count]
        del staged.items[:count]
        self.size -= count
        return items

    def forget(self, epochs: dict[TopicAndPartition, int]) -> list[Staged]:
        """Partitions given up: drop and return their items; items staged later for them
        from before `epochs` (the assignment they next come back with) are refused."""
        dropped: list[Staged] = []
        for partition, epoch in epochs.items():
            if (staged := self._staged.pop(partition, None)) is not None:
                dropped += staged.in_order()
            self._epochs[partition] = epoch
        self.size -= len(dropped)
        return dropped

    def remove(self, item: Staged) -> None:
        """Take `item` out (refused: it is settled another way)."""
        staged = self._staged.get((item.position.topic, item.position.partition))
        if staged is None:
            return
        kept = [other for other in staged.items if other is not item]
        self.size -= len(staged.items) - len(kept)
        staged.items = kept

    def staged_in(self, partitions: Iterable[TopicAndPartition]) -> int:
        return sum(len(self._staged[partition].items) for partition in partitions
                   if partition in self._staged)


def _offset(item: Staged) -> int:
    return item.position.offset


class _Partition:
    """One input partition's staged items; sorted by offset whenever read."""

    __slots__ = ("items", "ordered")

    def __init__(self) -> None:
        self.items: list[Staged] = []
        self.ordered = True  # `items` is sorted by offset

    def add(self, item: Staged) -> None:
        # Records mostly come in offset order; a dead-letter entry staged after later
        # records of its partition is the exception, sorted in on the next read.
        if self.items and item.position.offset < self.items[-1].position.offset:
            self.ordered = False
        self.items.append(item)

    def in_order(self) -> list[Staged]:
        if not self.ordered:
            self.items.sort(key=_offset)  # stable: one offset's items keep staging order
            self.ordered = True
        return self.items

    def index(self, offset: int) -> int:
        """How many items are below `offset`."""
        return bisect_left(self.in_order(), offset, key=_offset)
