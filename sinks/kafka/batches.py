"""A batch of events as aiokafka record batches: grouped by the partition each key goes to,
packed up to the producer's batch size, and, after a round, what has to be sent again and
which records the broker refused alone as too large."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaProducer  # type: ignore[import-untyped,unused-ignore]
from aiokafka.errors import MessageSizeTooLargeError  # type: ignore[import-untyped,unused-ignore]

from pipeline.model import SignedEvent
from sinks.kafka.errors import PRODUCER_STATE_ERRORS
from sinks.kafka.sizes import Entry

__all__ = ["PartitionEntries", "RoundOutcome", "by_partition", "record_batches", "triage"]

PartitionEntries = tuple[int, list[Entry]]  # a partition and the events for it, in order


async def by_partition(producer: AIOKafkaProducer, topic: str, entries: Sequence[Entry]
                       ) -> dict[int, list[Entry]]:
    """``entries`` grouped by the partition the producer's partitioner picks for their
    key, as send() would, in order within each partition."""
    await producer.partitions_for(topic)  # metadata first, as send() does
    grouped: dict[int, list[Entry]] = {}
    # One partition lookup per distinct key in the batch (agents repeat): the pure-Python
    # murmur2 per event was ~10% of the daemon's time. Keyless events are spread by the
    # partitioner, so they are not cached.
    by_key: dict[bytes, int] = {}
    for entry in entries:
        key, value, _ = entry[1]
        partition = by_key.get(key) if key is not None else None
        if partition is None:
            # aiokafka has no public "which partition for this key"; _partition is what
            # send() itself calls (configured partitioner, available partitions).
            partition = producer._partition(topic, None, key, value, key, value)
            if key is not None:
                by_key[key] = partition
        grouped.setdefault(partition, []).append(entry)
    return grouped


def record_batches(producer: AIOKafkaProducer, entries: Sequence[Entry]
                   ) -> list[tuple[Any, list[Entry]]]:
    """``entries`` packed into record batches of at most the producer's batch size, each
    with the entries it holds."""
    batches: list[tuple[Any, list[Entry]]] = [(producer.create_batch(), [])]
    for entry in entries:
        key, value, headers = entry[1]
        builder, packed = batches[-1]
        if builder.append(timestamp=None, key=key, value=value, headers=headers) is None:
            builder, packed = producer.create_batch(), []  # full: the next one takes it
            builder.append(timestamp=None, key=key, value=value, headers=headers)
            batches.append((builder, packed))
        packed.append(entry)
    return batches


@dataclass
class RoundOutcome:
    """What a round of record batches came to (``triage``)."""

    again: list[PartitionEntries] = field(default_factory=list)
    """To send again: the halves of each refused batch of several records, and the batches
    behind a refusal's sequence gap."""
    refused_partitions: set[int] = field(default_factory=set)
    """Partitions where the broker refused a batch (their producer sequence has a gap)."""
    halved: bool = False
    """A refused batch held several records (smaller batches would fit)."""
    too_large: list[SignedEvent] = field(default_factory=list)
    """Events the broker refused in a batch of their own: nothing left to split."""
    failure: BaseException | None = None
    """The first other failure: it ends the send, for the whole batch."""


def triage(sent: Sequence[PartitionEntries], outcomes: Sequence[Any]) -> RoundOutcome:
    """A round's outcomes (each record batch sent, in order, and its acknowledgement or
    exception) sorted into a ``RoundOutcome``."""
    round_ = RoundOutcome()
    for (partition, packed), outcome in zip(sent, outcomes, strict=True):
        if isinstance(outcome, MessageSizeTooLargeError):
            round_.refused_partitions.add(partition)
            if len(packed) > 1:
                middle = len(packed) // 2
                round_.again += [(partition, packed[:middle]), (partition, packed[middle:])]
                round_.halved = True
            else:
                round_.too_large.append(packed[0][0])
        elif isinstance(outcome, PRODUCER_STATE_ERRORS) and partition in round_.refused_partitions:
            round_.again.append((partition, packed))
        elif isinstance(outcome, Exception):
            round_.failure = round_.failure or outcome
    return round_
