"""The records waiting for the transaction of their input partition.

The Kafka sink's events and the dead-letter entries are staged here (their part of the
record settles at once) and written by the transaction that commits the offset past them.
Each item keeps the bytes it was staged with, so a transaction tried again after an abort
writes the same records.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from pipeline.deadletter.entry import DeadLetterEntry
from pipeline.model import Position, SignedEvent
from pipeline.sources.offsets import TopicAndPartition

Headers = list[tuple[str, bytes]]


@dataclass(frozen=True, slots=True)
class Staged:
    """One Kafka record of an input position: an event for the sink's topic (`event` set,
    `sink` names the sink) or a dead-letter entry (`origin` set)."""

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


class Outbox:
    """Staged records per input partition, taken in offset order up to a commit point."""

    def __init__(self) -> None:
        self._staged: dict[TopicAndPartition, list[Staged]] = {}
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
                self._staged.setdefault(key, []).append(item)
                self.size += 1
        return stale

    def before(self, partition: TopicAndPartition, offset: int) -> list[Staged]:
        """The items of `partition` below `offset`, in offset order (left staged)."""
        items = [item for item in self._staged.get(partition, ())
                 if item.position.offset < offset]
        items.sort(key=lambda item: item.position.offset)
        return items

    def release(self, partition: TopicAndPartition, offset: int) -> list[Staged]:
        """Remove and return the items of `partition` below `offset` (committed)."""
        items = self.before(partition, offset)
        if items:
            self._staged[partition] = [item for item in self._staged[partition]
                                       if item.position.offset >= offset]
            self.size -= len(items)
        return items

    def forget(self, epochs: dict[TopicAndPartition, int]) -> list[Staged]:
        """Partitions given up: drop and return their items; items staged later for them
        from before `epochs` (the assignment they next come back with) are refused."""
        dropped: list[Staged] = []
        for partition, epoch in epochs.items():
            dropped += self._staged.pop(partition, [])
            self._epochs[partition] = epoch
        self.size -= len(dropped)
        return dropped

    def remove(self, item: Staged) -> None:
        """Take `item` out (refused: it is settled another way)."""
        key = (item.position.topic, item.position.partition)
        kept = [staged for staged in self._staged.get(key, []) if staged is not item]
        self.size -= len(self._staged.get(key, [])) - len(kept)
        self._staged[key] = kept

    def staged_in(self, partitions: Iterable[TopicAndPartition]) -> int:
        return sum(len(self._staged.get(partition, ())) for partition in partitions)
