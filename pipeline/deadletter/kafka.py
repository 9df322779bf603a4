"""The Kafka dead-letter store: entries as JSON records on a topic, and replay markers as
records on the same topic (JSON objects with `replayed`, no `origin`)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaError

from pipeline.deadletter.entry import DeadLetterEntry, is_marker, marker
from pipeline.deadletter.store import DeadLetterError, DeadLetterRefused, StoredEntries
from pipeline.exactly_once.outbox import Staged
from pipeline.kafka_connection import caught_causes, explain, topic_partitions
from pipeline.kafka_limits import (
    MAX_REQUEST_SIZE,
    RECORD_MARGIN,
    TOO_LARGE,
    TOO_LARGE_REASON,
    RecordLimit,
    record_bytes,
)
from pipeline.model import SignedEvent
from pipeline.signing.signers import Signer

log = logging.getLogger(__name__)

MARKER_HEADER = "govpipe-marker"
# The value's length is a varint in the record: room for it growing with the value.
_LENGTH_ROOM = 8


class KafkaDeadLetter:
    """Entries as JSON records on a Kafka topic, acknowledged by all in-sync replicas.

    An entry bigger than the topic takes (its max.message.bytes and the producer's request
    size, learned from the cluster: `pipeline.kafka_limits`) is written as a summary
    (`DeadLetterEntry.to_json`); the original stays at the recorded source position. An
    entry the broker refuses all the same (the limit unknown, or lowered since) is written
    again as its summary. Written whole, it would fail forever and hold every later entry
    and offset behind it. A summary refused too (a topic that takes no 1 KiB record) fails
    the write (`DeadLetterRefused`), which the writer retries until the topic is fixed.
    """

    def __init__(self, client_options: Mapping[str, Any], topic: str,
                 signer: Signer | None = None, *, limit: RecordLimit | None = None) -> None:
        """`client_options`: aiokafka's connection keywords (pipeline.kafka_connection);
        `signer` signs each entry written (the daemon's; None only to read and mark);
        `limit`: the topic's record limit (by default learned from the cluster)."""
        self._options = dict(client_options)
        self._signer = signer
        self._topic = topic
        self._limit = limit if limit is not None else RecordLimit(self._options, topic)
        self.description = f"kafka topic {topic}"
        self._producer: AIOKafkaProducer | None = None
        self._last_error: str | None = None

    async def _started(self) -> AIOKafkaProducer:
        if self._producer is None:
            self._producer = await start_producer(self._options)
        return self._producer

    def use_signer(self, signer: Signer) -> None:
        """Sign the entries written from now on with `signer` (a key rotation)."""
        self._signer = signer

    async def _encoded(self, entry: DeadLetterEntry) -> tuple[bytes, bool]:
        """The entry whole (True), or its summary when the whole one is over the topic's
        limit (False)."""
        return self._encoded_within(entry, await self._limit.get())

    def _encoded_within(self, entry: DeadLetterEntry, limit: int) -> tuple[bytes, bool]:
        room = limit - record_bytes(_bounded_key(entry.key), b"", []) - _LENGTH_ROOM
        return entry.encoded(room, self._signer)

    def _summary(self, entry: DeadLetterEntry) -> bytes:
        return entry.to_json(0, self._signer)

    async def write(self, entries: Sequence[DeadLetterEntry]) -> None:
        try:
            with caught_causes() as catcher:
                producer = await self._started()
            values = [await self._encoded(entry) for entry in entries]
            futures = [await producer.send(self._topic, value, key=_bounded_key(entry.key))
                       for entry, (value, _) in zip(entries, values, strict=True)]
            outcomes = await asyncio.gather(*futures, return_exceptions=True)
            await self._settle_outcomes(entries, values, outcomes)
        except KafkaError as exc:
            self._last_error = explain(exc, self._options, catcher.cause) \
                if self._producer is None else f"{type(exc).__name__}: {exc}"
            raise DeadLetterError(f"cannot write to {self.description}: "
                                  f"{self._last_error}") from exc
        self._last_error = None

    async def _settle_outcomes(self, entries: Sequence[DeadLetterEntry],
                               values: Sequence[tuple[bytes, bool]], outcomes: Sequence[Any]
                               ) -> None:
        """Raise the first failure, unless the broker refused records as too large: then
        every entry that failed is written again alone (as its summary if refused alone)."""
        failures = [(entry, value) for entry, value, outcome
                    in zip(entries, values, outcomes, strict=True)
                    if isinstance(outcome, BaseException)]
        if not failures:
            return
        if not any(isinstance(outcome, TOO_LARGE) for outcome in outcomes):
            raise next(o for o in outcomes if isinstance(o, BaseException))
        # The refusal left a gap in the idempotent producer's sequence numbers: a new one.
        await self._replace_producer()
        for entry, (value, whole) in failures:
            await self._write_alone(entry, value, whole=whole)

    async def _write_alone(self, entry: DeadLetterEntry, value: bytes, *, whole: bool
                           ) -> None:
        producer = await self._started()
        try:
            await producer.send_and_wait(self._topic, value, key=_bounded_key(entry.key))
            return
        except TOO_LARGE as exc:
            await self._replace_producer()
            if not whole:
                raise DeadLetterRefused(
                    f"{self.description} refuses even the {len(value)}-byte summary of "
                    f"entry {entry.entry_id} ({type(exc).__name__}): raise the topic's "
                    "max.message.bytes") from exc
        log.warning("%s refused dead-letter entry %s as too large; writing its summary",
                    self.description, entry.entry_id)
        await self._write_alone(entry, self._summary(entry), whole=False)

    async def _replace_producer(self) -> None:
        producer, self._producer = self._producer, None
        if producer is not None:
            await producer.stop()

    def check(self) -> str | None:
        return self._last_error

    def recover(self) -> list[str]:
        return []

    async def read(self) -> StoredEntries:
        """Every JSON object on the topic up to the end it has now. A record that is not
        one is passed over unreported (govpipe writes none)."""
        stored = StoredEntries()
        for value in await _read_topic(self._options, self._topic):
            if is_marker(value):
                stored.replayed.add(str(value["replayed"]))
            else:
                stored.entries.append(value)
        return stored

    async def mark_replayed(self, entry_ids: Sequence[str]) -> None:
        producer = await self._started()
        futures = [await producer.send(self._topic, marker(entry_id),
                                       headers=[(MARKER_HEADER, b"replayed")])
                   for entry_id in entry_ids]
        await asyncio.gather(*futures)

    async def aclose(self) -> None:
        producer, self._producer = self._producer, None
        if producer is not None:
            await producer.stop()


class StagedKafkaDeadLetter(KafkaDeadLetter):
    """Exactly-once mode: entries are staged for the transaction of their input partition
    (`stage`), which writes them with the offset past their record; `write` returns once
    they are staged. Reading and replay markers are as for `KafkaDeadLetter`."""

    def __init__(self, client_options: Mapping[str, Any], topic: str,
                 stage: Callable[[Sequence[Staged]], None], signer: Signer | None = None,
                 *, room: Callable[[], Awaitable[None]] | None = None,
                 limit: RecordLimit | None = None) -> None:
        """`room`: waits until the transactions have room for more staged records (so
        transactions that keep failing hold entries here, where the writer's bound pauses
        the source, instead of growing the staged records without bound)."""
        super().__init__(client_options, topic, signer, limit=limit)
        self.description = f"kafka topic {topic} (transactional)"
        self._stage = stage
        self._room = room

    async def write(self, entries: Sequence[DeadLetterEntry]) -> None:
        if self._room is not None:
            await self._room()
        self._stage([await self._staged(entry) for entry in entries])

    async def _staged(self, entry: DeadLetterEntry) -> Staged:
        value, whole = await self._encoded(entry)
        return Staged(entry.position, self._topic, _bounded_key(entry.key), value, [],
                      origin=entry.origin, entry=entry if whole else None)

    def failed_event(self, sink: str, event: SignedEvent, error: str) -> Staged:
        """The entry, to stage in place of `sink`'s record of `event` that its transaction
        refused as too large (whole if the topic takes it, else its summary)."""
        entry = DeadLetterEntry(origin=sink, reason=TOO_LARGE_REASON, error=error,
                                position=event.position, event=event.attributes, sink=sink)
        known = self._limit.known
        value, whole = self._encoded_within(
            entry, known if known is not None else MAX_REQUEST_SIZE - RECORD_MARGIN)
        return Staged(event.position, self._topic, None, value, [], origin=sink,
                      entry=entry if whole else None)

    def summary(self, item: Staged) -> Staged | None:
        """`item`, an entry its transaction refused as too large, as its summary; None when
        it is the summary already."""
        if item.entry is None:
            return None
        return Staged(item.position, item.topic, item.key, self._summary(item.entry), [],
                      origin=item.origin)


async def start_producer(client_options: Mapping[str, Any]) -> AIOKafkaProducer:
    """A started producer whose sends are acknowledged by all in-sync replicas, once each."""
    producer = AIOKafkaProducer(**client_options, acks="all", enable_idempotence=True)
    try:
        await producer.start()
    except BaseException:
        await producer.stop()
        raise
    return producer


def _bounded_key(key: bytes | None) -> bytes | None:
    # A key too big for a record goes too; the entry's source position identifies it.
    return key if key is None or len(key) <= 16_384 else None


async def _read_topic(options: Mapping[str, Any], topic: str) -> list[dict[str, Any]]:
    """Every JSON object on `topic` up to the end it has now (entries and markers)."""
    partitions = [TopicPartition(topic, p) for p in await topic_partitions(options, topic)]
    if not partitions:
        return []
    # read_committed: under exactly-once the entries of aborted transactions are on the
    # topic too, and must not go back on the input.
    consumer = AIOKafkaConsumer(**options, enable_auto_commit=False,
                                isolation_level="read_committed")
    await consumer.start()
    try:
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        ends = await consumer.end_offsets(partitions)
        return await _read_to(consumer, ends)
    finally:
        await consumer.stop()




async def _read_to(consumer: AIOKafkaConsumer, ends: dict[TopicPartition, int]
                   ) -> list[dict[str, Any]]:
    values: list[dict[str, Any]] = []
    while await _behind(consumer, ends):
        fetched = await consumer.getmany(timeout_ms=1000)
        for messages in fetched.values():
            for message in messages:
                try:
                    value = orjson.loads(message.value or b"")
                except orjson.JSONDecodeError:
                    continue
                if isinstance(value, dict):
                    values.append(value)
    return values


async def _behind(consumer: AIOKafkaConsumer, ends: dict[TopicPartition, int]) -> bool:
    for tp, end in ends.items():
        if await consumer.position(tp) < end:
            return True
    return False
