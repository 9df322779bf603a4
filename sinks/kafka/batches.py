"""A batch of events as aiokafka record batches: grouped by the partition each key goes to,
packed up to the producer's batch size, and, after a round, what has to be sent again."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from aiokafka import AIOKafkaProducer  # type: ignore[import-untyped,unused-ignore]
from aiokafka.errors import MessageSizeTooLargeError  # type: ignore[import-untyped,unused-ignore]

from pipeline.model import SignedEvent
from sinks.kafka.errors import PRODUCER_STATE_ERRORS
from sinks.kafka.messages import ContentMode, Message, to_message

__all__ = ["PartitionMessages", "by_partition", "record_batches", "triage"]

PartitionMessages = tuple[int, list[Message]]  # a partition and messages for it, in order


async def by_partition(producer: AIOKafkaProducer, topic: str, batch: Sequence[SignedEvent],
                       content_mode: ContentMode) -> dict[int, list[Message]]:
    """The batch's messages grouped by the partition the producer's partitioner picks for
    their key, as send() would, in order within each partition."""
    await producer.partitions_for(topic)  # metadata first, as send() does
    grouped: dict[int, list[Message]] = {}
    # One partition lookup per distinct key in the batch (agents repeat): the pure-Python
    # murmur2 per event was ~10% of the daemon's time. Keyless events are spread by the
    # partitioner, so they are not cached.
    by_key: dict[bytes, int] = {}
    for event in batch:
        message = to_message(event, content_mode)
        key, value, _ = message
        partition = by_key.get(key) if key is not None else None
        if partition is None:
            # aiokafka has no public "which partition for this key"; _partition is what
            # send() itself calls (configured partitioner, available partitions).
            partition = producer._partition(topic, None, key, value, key, value)
            if key is not None:
                by_key[key] = partition
        grouped.setdefault(partition, []).append(message)
    return grouped


def record_batches(producer: AIOKafkaProducer, messages: Sequence[Message]
                   ) -> list[tuple[Any, list[Message]]]:
    """``messages`` packed into record batches of at most the producer's batch size, each
    with the messages it holds."""
    batches: list[tuple[Any, list[Message]]] = [(producer.create_batch(), [])]
    for message in messages:
        key, value, headers = message
        builder, packed = batches[-1]
        if builder.append(timestamp=None, key=key, value=value, headers=headers) is None:
            builder, packed = producer.create_batch(), []  # full: the next one takes it
            builder.append(timestamp=None, key=key, value=value, headers=headers)
            batches.append((builder, packed))
        packed.append(message)
    return batches


def triage(sent: Sequence[PartitionMessages], outcomes: Sequence[Any]
           ) -> tuple[list[PartitionMessages], set[int], BaseException | None]:
    """From a round's outcomes: what to send again (the halves of each refused batch of
    several records, and the batches behind a refusal's sequence gap), the partitions with
    a refusal, and the first failure that ends the send."""
    again: list[PartitionMessages] = []
    refused: set[int] = set()
    failure: BaseException | None = None
    for (partition, packed), outcome in zip(sent, outcomes, strict=True):
        if isinstance(outcome, MessageSizeTooLargeError):
            refused.add(partition)
            if len(packed) > 1:
                middle = len(packed) // 2
                again += [(partition, packed[:middle]), (partition, packed[middle:])]
            else:
                failure = failure or outcome  # one record over the limit: nothing to split
        elif isinstance(outcome, PRODUCER_STATE_ERRORS) and partition in refused:
            again.append((partition, packed))
        elif isinstance(outcome, Exception):
            failure = failure or outcome
    return again, refused, failure
