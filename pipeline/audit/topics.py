"""An audit of Kafka topics: the input topic the daemon consumed, its output topic (the
Kafka sink) and its dead-letter topic, each read to the end offsets it had when the audit
began, by consumers of no group that commit nothing: output and dead-letter
`read_committed`, the input as the daemon reads it (`source.isolation_level`).

The output and dead-letter ends are taken before the input's: everything the output holds
then was read from an input record the input's end covers, so a live pipeline can show
its newest records as missing (not yet processed) but never an output as unknown.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition

from pipeline.audit.progress import Progress
from pipeline.audit.trail import NO_LIMIT, Stream, TrailAudit
from pipeline.cloudevents.codec import decode_object
from pipeline.cloudevents.mapping import InvalidEvent
from pipeline.kafka_connection import topic_partitions

Ends = dict[TopicPartition, int]
OnRecord = Callable[[ConsumerRecord[bytes, bytes]], None]


@dataclass(frozen=True, slots=True)
class TopicTrail:
    """The topics of one audit and the aiokafka options to reach them."""

    input_topic: str
    output_topic: str
    deadletter_topic: str | None
    input_options: Mapping[str, Any]  # input and dead-letter: the [kafka] connection
    output_options: Mapping[str, Any]  # the Kafka sink's (it may name another cluster)
    # The input is read as the daemon reads it (source.isolation_level): under
    # read_uncommitted it processes records of aborted transactions too.
    input_isolation: str = "read_committed"


class MissingTopic(Exception):
    """A topic the audit needs does not exist."""


async def audit_topics(trail: TopicTrail, audit: TrailAudit, progress: Progress) -> None:
    """Feed `audit` the input positions, output records and dead-letter entries."""
    async with contextlib.AsyncExitStack() as readers:
        output = await readers.enter_async_context(_TopicReader(trail.output_options))
        stored = await readers.enter_async_context(_TopicReader(trail.input_options))
        source = await readers.enter_async_context(
            _TopicReader(trail.input_options, trail.input_isolation))
        output_ends = await output.ends(trail.output_topic)
        deadletter_ends = ({} if trail.deadletter_topic is None
                           else await stored.ends(trail.deadletter_topic))
        input_ends = await source.ends(trail.input_topic, required=True)
        await _expect_input(source, input_ends, audit, progress)
        progress.start(f"output topic {trail.output_topic}")
        await output.read(output_ends, lambda m: audit.output(
            m.value or b"", _where(m), list(m.headers)), progress)
        if deadletter_ends:
            progress.start(f"dead-letter topic {trail.deadletter_topic}")
            await stored.read(deadletter_ends, lambda m: _deadletter(audit, m), progress)


async def _expect_input(source: _TopicReader, ends: Ends, audit: TrailAudit,
                        progress: Progress) -> None:
    starts = await source.starts(list(ends))
    offsets: dict[TopicPartition, list[int]] = {tp: [] for tp in ends}
    progress.start("input topic")
    await source.read(ends, lambda m: offsets[TopicPartition(m.topic, m.partition)].append(
        m.offset), progress)
    for tp, present in offsets.items():
        audit.expect(Stream("kafka", tp.topic, tp.partition), present, starts[tp])


def _deadletter(audit: TrailAudit, message: ConsumerRecord[bytes, bytes]) -> None:
    try:
        entry = decode_object(message.value or b"", NO_LIMIT)
    except InvalidEvent:
        audit.unreadable(_where(message))
        return
    audit.deadletter(entry, _where(message))


def _where(message: ConsumerRecord[bytes, bytes]) -> str:
    return f"{message.topic}/{message.partition} offset {message.offset}"


class _TopicReader:
    """One unassigned consumer that reads whole partitions up to given end offsets."""

    def __init__(self, options: Mapping[str, Any],
                 isolation: str = "read_committed") -> None:
        self._options = options
        self._consumer = AIOKafkaConsumer(**options, enable_auto_commit=False,
                                          isolation_level=isolation,
                                          auto_offset_reset="earliest")

    async def __aenter__(self) -> _TopicReader:
        try:
            await self._consumer.start()
        except BaseException:
            await self._consumer.stop()
            raise
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self._consumer.stop()

    async def ends(self, topic: str, *, required: bool = False) -> Ends:
        """The end offset of each partition of `topic` ({} when it does not exist)."""
        partitions = await self._partitions(topic)
        if not partitions and required:
            raise MissingTopic(f"topic {topic} does not exist")
        ends: Ends = await self._consumer.end_offsets(
            [TopicPartition(topic, p) for p in partitions]) if partitions else {}
        return ends

    async def _partitions(self, topic: str) -> list[int]:
        return await topic_partitions(self._options, topic)

    async def starts(self, partitions: list[TopicPartition]) -> Ends:
        """The log start offsets (above 0 once retention removed records)."""
        starts: Ends = await self._consumer.beginning_offsets(partitions)
        return starts

    async def read(self, ends: Ends, on_record: OnRecord, progress: Progress) -> None:
        """Each record from the start of each partition to its end in `ends`."""
        pending = {tp: end for tp, end in ends.items() if end > 0}
        self._consumer.assign(list(pending))
        if pending:
            await self._consumer.seek_to_beginning(*pending)
        while True:
            for tp, end in list(pending.items()):
                if await self._consumer.position(tp) >= end:
                    del pending[tp]
            if not pending:
                break
            fetched = await self._consumer.getmany(*pending, timeout_ms=1000)
            for tp, messages in fetched.items():
                for message in messages:
                    if message.offset < pending.get(tp, 0):
                        on_record(message)
                        progress.tick()
        progress.done()
