"""A transaction's staged records as aiokafka record batches: grouped by the output
partition each goes to, in offset order within it, packed up to the producer's batch size.

aiokafka's per-record `send` (partitioner, accumulator, a future per record, each resolved
through the event loop) cost a transaction more than the rest of the commit; a record
batch has one future. A batch sent to a partition adds that partition to the producer's
transaction, as `send` does: both go through the accumulator, which adds the partition of
every batch it queues (`MessageAccumulator._append_batch`, in every aiokafka with
transactions). The producer's batch size is kept within the smallest topic limit known
(`TransactionalProducers`), so a batch is refused only for a limit learned too late.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Collection, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaProducer

from pipeline.exactly_once.outbox import Staged


@dataclass(slots=True)
class Batch:
    """A record batch for one output partition and the staged items it holds, in order."""

    topic: str
    partition: int
    builder: Any  # aiokafka's BatchBuilder
    items: list[Staged] = field(default_factory=list)

    def add(self, item: Staged) -> bool:
        """Append `item`; False when the batch is full (a batch's first record always
        fits, whatever its size)."""
        return self.builder.append(timestamp=None, key=item.key, value=item.value,
                                   headers=item.headers) is not None


Sent = tuple[asyncio.Future[Any], list[Staged]]  # a batch's outcome and what it held


async def send_batches(producer: AIOKafkaProducer, items: Sequence[Staged],
                       alone: Collection[int], sent: list[Sent]) -> None:
    """Send `items` (offset order) in record batches, appending each batch's future and
    items to `sent` as it goes (a send that raises part-way leaves the earlier ones there
    to be awaited). The items whose id is in `alone` go each in a batch holding nothing
    else, so that a refusal names them."""
    partition_of = await partitioner(producer, {item.topic for item in items})
    for batch in pack(producer, items, alone, partition_of):
        batch.builder.close()  # nothing else goes in (see BatchBuilder.close)
        future = await producer.send_batch(batch.builder, batch.topic,
                                           partition=batch.partition)
        sent.append((future, batch.items))


def pack(producer: AIOKafkaProducer, items: Sequence[Staged], alone: Collection[int],
         partition_of: Callable[[Staged], int]) -> Iterator[Batch]:
    """`items` in record batches, each partition's in the order of `items`; each batch
    yielded once full, so that it is sent while the next fills (send_batch waits until
    the sender takes the partition's previous batch: a transaction holds few batches
    built at a time, however many records it writes)."""
    filling: dict[tuple[str, int], Batch] = {}
    for item in items:
        where = (item.topic, partition_of(item))
        batch = filling.get(where)
        if id(item) in alone:
            if batch is not None:
                yield filling.pop(where)
            yield _new(producer, where, item)
        elif batch is None or not batch.add(item):
            if batch is not None:
                yield batch
            filling[where] = _new(producer, where, item)
        else:
            batch.items.append(item)
    yield from filling.values()


def _new(producer: AIOKafkaProducer, where: tuple[str, int], item: Staged) -> Batch:
    batch = Batch(*where, producer.create_batch(), [item])
    batch.add(item)
    return batch


async def partitioner(producer: AIOKafkaProducer, topics: Collection[str]
                      ) -> Callable[[Staged], int]:
    """What partition of its topic the producer's partitioner picks for an item, as
    send() would."""
    for topic in topics:
        await producer.partitions_for(topic)  # metadata first, as send() does
    # One lookup per distinct key (agents repeat): the partitioner's murmur2 is pure
    # Python. Keyless records are spread by the partitioner, so they are not cached.
    by_key: dict[tuple[str, bytes], int] = {}

    def partition_of(item: Staged) -> int:
        where = (item.topic, item.key) if item.key is not None else None
        partition = by_key.get(where) if where is not None else None
        if partition is None:
            # aiokafka has no public "which partition for this key"; _partition is what
            # send() itself calls (configured partitioner, available partitions).
            partition = producer._partition(item.topic, None, item.key, item.value,
                                            item.key, item.value)
            if where is not None:
                by_key[where] = partition
        return partition

    return partition_of
