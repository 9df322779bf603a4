"""The Kafka dead-letter store: entries as JSON records on a topic, and replay markers as
records on the same topic (JSON objects with `replayed`, no `origin`)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaError

from pipeline.deadletter.entry import DeadLetterEntry, is_marker, marker
from pipeline.deadletter.store import DeadLetterError, StoredEntries
from pipeline.exactly_once.outbox import Staged
from pipeline.kafka_connection import caught_causes, explain, topic_partitions
from pipeline.signing.signers import Signer

MARKER_HEADER = "govpipe-marker"


class KafkaDeadLetter:
    """Entries as JSON records on a Kafka topic, acknowledged by all in-sync replicas.

    An entry bigger than one record may be (a `too_large` rejection always is: its value is
    over max_event_bytes) is written as a summary (`DeadLetterEntry.to_json`); the original
    stays at the recorded source position. Written whole, it would fail forever and hold
    every later entry and offset behind it.
    """

    # Under the producer's max_request_size and the topics' max.message.bytes defaults
    # (1 MiB), with room for the key and record overhead.
    MAX_ENTRY_BYTES = 1_000_000

    def __init__(self, client_options: Mapping[str, Any], topic: str,
                 signer: Signer | None = None) -> None:
        """`client_options`: aiokafka's connection keywords (pipeline.kafka_connection);
        `signer` signs each entry written (the daemon's; None only to read and mark)."""
        self._options = dict(client_options)
        self._signer = signer
        self._topic = topic
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

    async def write(self, entries: Sequence[DeadLetterEntry]) -> None:
        try:
            with caught_causes() as catcher:
                producer = await self._started()
            futures = [await producer.send(
                self._topic, entry.to_json(self.MAX_ENTRY_BYTES, self._signer),
                key=_bounded_key(entry.key))
                       for entry in entries]
            await asyncio.gather(*futures)
        except KafkaError as exc:
            self._last_error = explain(exc, self._options, catcher.cause) \
                if self._producer is None else f"{type(exc).__name__}: {exc}"
            raise DeadLetterError(f"cannot write to {self.description}: "
                                  f"{self._last_error}") from exc
        self._last_error = None

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
                 *, room: Callable[[], Awaitable[None]] | None = None) -> None:
        """`room`: waits until the transactions have room for more staged records (so
        transactions that keep failing hold entries here, where the writer's bound pauses
        the source, instead of growing the staged records without bound)."""
        super().__init__(client_options, topic, signer)
        self.description = f"kafka topic {topic} (transactional)"
        self._stage = stage
        self._room = room

    async def write(self, entries: Sequence[DeadLetterEntry]) -> None:
        if self._room is not None:
            await self._room()
        self._stage([Staged(entry.position, self._topic, _bounded_key(entry.key),
                            entry.to_json(self.MAX_ENTRY_BYTES, self._signer), [],
                            origin=entry.origin)
                     for entry in entries])


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
