"""Reading a dead-letter topic to its current end, and writing replays to Kafka."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from pipeline.deadletter.replay import ReplayRecord, is_marker, marker

MARKER_HEADER = "govpipe-marker"


async def read_topic(bootstrap: str, topic: str) -> list[dict[str, Any]]:
    """Every JSON object on `topic` up to the end it has now (entries and markers)."""
    partitions = [TopicPartition(topic, p) for p in await _partitions(bootstrap, topic)]
    if not partitions:
        return []
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        ends = await consumer.end_offsets(partitions)
        return await _read_to(consumer, ends)
    finally:
        await consumer.stop()


async def _partitions(bootstrap: str, topic: str) -> list[int]:
    """The topic's partition ids ([] when it does not exist)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        described = await admin.describe_topics([topic])
    finally:
        await admin.close()
    return sorted(p["partition"] for t in described if t.get("error_code") == 0
                  for p in t.get("partitions", []))


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


def replayed_ids(values: Iterable[dict[str, Any]]) -> set[str]:
    return {str(value["replayed"]) for value in values if is_marker(value)}


class KafkaReplayWriter:
    """Produces replayed records to the input topic and markers to the dead-letter topic."""

    def __init__(self, bootstrap: str, input_topic: str, deadletter_topic: str | None) -> None:
        self._producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all",
                                          enable_idempotence=True)
        self._input_topic = input_topic
        self._deadletter_topic = deadletter_topic

    async def __aenter__(self) -> KafkaReplayWriter:
        await self._producer.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self._producer.stop()

    async def send(self, records: list[ReplayRecord]) -> None:
        """Put `records` on the input topic, acknowledged, then mark them replayed."""
        futures = [await self._producer.send(self._input_topic, r.value, key=r.key,
                                             headers=list(r.headers)) for r in records]
        await asyncio.gather(*futures)
        if self._deadletter_topic is None:
            return
        markers = [await self._producer.send(self._deadletter_topic, marker(r.entry_id),
                                             headers=[(MARKER_HEADER, b"replayed")])
                   for r in records]
        await asyncio.gather(*markers)
