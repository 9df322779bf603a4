"""The at-least-once Kafka sink with a fake producer and a topic that refuses record batches
over its max.message.bytes (as the broker does, leaving a gap in the idempotent producer's
sequence that fails that partition's later batches): an event too large for the topic fails
alone, the others are written once; any other failure still fails the whole batch."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiokafka.errors import (
    KafkaTimeoutError,
    MessageSizeTooLargeError,
    OutOfOrderSequenceNumber,
)
from aiokafka.producer.message_accumulator import BatchBuilder

from pipeline.model import Position, SignedEvent
from sinks.base import SinkError
from sinks.kafka import KafkaSink

MAX_MESSAGE_BYTES = 4096


class Topic:
    """Two partitions; what the fake producers wrote to each, and the partitions that
    answer every batch with a failure."""

    def __init__(self) -> None:
        self.written: dict[int, list[bytes]] = {0: [], 1: []}
        self.refused_batches = 0
        self.failing: dict[int, Exception] = {}
        self.producers: list[FakeProducer] = []


class RecordingBuilder:
    """aiokafka's record batch builder (its real sizes), keeping the values it holds."""

    def __init__(self, batch_size: int) -> None:
        self.builder = BatchBuilder(batch_size, 0)  # uncompressed
        self.values: list[bytes] = []

    def append(self, *, timestamp: float | None, key: bytes | None, value: bytes,
               headers: list[tuple[str, bytes]]) -> Any:
        metadata = self.builder.append(timestamp=timestamp, key=key, value=value,
                                       headers=headers)
        if metadata is not None:
            self.values.append(value)
        return metadata

    def size(self) -> int:
        return int(self.builder.size())


class FakeProducer:
    def __init__(self, topic: Topic, **options: Any) -> None:
        self.topic, self.options = topic, options
        self.gaps: set[int] = set()  # partitions with a refused batch: later ones fail
        topic.producers.append(self)

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def partitions_for(self, topic: str) -> set[int]:
        return {0, 1}

    def _partition(self, topic: str, partition: None, key: bytes | None, value: bytes,
                   *_: Any) -> int:
        return key[-1] % 2 if key else 0

    def create_batch(self) -> RecordingBuilder:
        return RecordingBuilder(self.options["max_batch_size"])

    async def send_batch(self, builder: RecordingBuilder, topic: str, *,
                         partition: int) -> asyncio.Future[None]:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if partition in self.topic.failing:
            future.set_exception(self.topic.failing[partition])
        elif partition in self.gaps:
            future.set_exception(OutOfOrderSequenceNumber("sequence gap"))
        elif builder.size() > MAX_MESSAGE_BYTES:
            self.gaps.add(partition)
            self.topic.refused_batches += 1
            future.set_exception(MessageSizeTooLargeError("over max.message.bytes"))
        else:
            self.topic.written[partition] += builder.values
            future.set_result(None)
        return future


BIG = {5, 12, 13}  # ~6 KB each: over the topic's limit, whatever the batch


def events(count: int = 40) -> list[SignedEvent]:
    return [SignedEvent(f"e{n}", {"id": f"e{n}"},
                        b'{"id":"e%d","pad":"%s"}' % (n, b"x" * (6000 if n in BIG else 40)),
                        Position("in", 0, n), partition_key=f"agent{n}")
            for n in range(count)]


def sink(topic: Topic, limit: int | None = None) -> KafkaSink:
    async def max_record_bytes() -> int | None:
        return limit

    return KafkaSink("fake:9092", "out", timeout_s=5, max_record_bytes=max_record_bytes,
                     producer_class=lambda **options: FakeProducer(topic, **options))


def written_ids(topic: Topic) -> list[str]:
    return sorted(value.split(b'"')[3].decode() for values in topic.written.values()
                  for value in values)


async def test_a_record_the_broker_refuses_alone_fails_its_event_only() -> None:
    topic, batch = Topic(), events()
    with pytest.raises(SinkError) as raised:
        await sink(topic).send(batch)
    error = raised.value
    assert (error.retriable, error.reason) == (False, "message_size_too_large_error")
    assert sorted(e.id for e in error.only or []) == sorted(f"e{n}" for n in BIG)
    # Every other record written once (was: the whole batch failed, though written).
    assert written_ids(topic) == sorted(e.id for e in batch if e.position.offset not in BIG)
    assert topic.refused_batches > len(BIG)  # the batches holding them were halved


async def test_a_known_limit_refuses_an_oversized_event_before_sending() -> None:
    topic, batch = Topic(), events()
    with pytest.raises(SinkError) as raised:
        await sink(topic, limit=MAX_MESSAGE_BYTES - 512).send(batch)
    error = raised.value
    assert (error.retriable, error.reason) == (False, "message_size_too_large_error")
    assert sorted(e.id for e in error.only or []) == sorted(f"e{n}" for n in BIG)
    assert "over the 3584 bytes topic out takes (and 2 more)" in str(error)
    assert written_ids(topic) == sorted(e.id for e in batch if e.position.offset not in BIG)
    assert topic.refused_batches == 0
    assert len(topic.producers) == 1  # no refusal, no producer replaced


async def test_a_lone_refusal_does_not_shrink_the_record_batches() -> None:
    topic = Topic()
    kafka = sink(topic)
    with pytest.raises(SinkError):
        await kafka.send([events()[5]])
    assert kafka.record_batch_bytes == 1_048_576


async def test_any_other_failure_still_fails_the_whole_batch() -> None:
    topic, batch = Topic(), events()
    topic.failing[1] = KafkaTimeoutError("no answer")
    with pytest.raises(SinkError) as raised:
        await sink(topic).send(batch)
    error = raised.value
    assert error.only is None
    assert (error.retriable, error.reason) == (True, "kafka_timeout_error")


async def test_a_batch_of_small_events_is_written_whole() -> None:
    topic, batch = Topic(), [e for e in events() if e.position.offset not in BIG]
    await sink(topic, limit=MAX_MESSAGE_BYTES - 512).send(batch)
    assert written_ids(topic) == sorted(e.id for e in batch)
