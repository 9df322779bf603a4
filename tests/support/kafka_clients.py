"""Kafka clients for tests and benchmarks: topics, producers (ordered, bulk, paced),
consumers (a count, or to the end offsets) and a group's committed offsets."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from aiokafka import (  # type: ignore[import-untyped,unused-ignore]
    AIOKafkaConsumer,
    AIOKafkaProducer,
)
from aiokafka.admin import (  # type: ignore[import-untyped,unused-ignore]
    AIOKafkaAdminClient,
    NewTopic,
)
from aiokafka.structs import (  # type: ignore[import-untyped,unused-ignore]
    ConsumerRecord,
    RecordMetadata,
    TopicPartition,
)

from tests.support.infra.process import ServiceError

_POLL_S = 0.1
_TOPIC_ALREADY_EXISTS = 36  # Kafka protocol error code


async def create_topics(
    bootstrap: str, names: Sequence[str], partitions: int = 1, timeout_s: float = 30.0,
    configs: Mapping[str, str] | None = None,
) -> None:
    """Create topics (replication 1, with topic ``configs`` such as max.message.bytes) and
    wait until metadata shows every partition led.

    Topics that already exist are accepted (so it can be re-run after a broker restart);
    ServiceError if creation fails or the partitions have no leader within ``timeout_s``.
    """
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        await admin.start()
        topics = [NewTopic(name, partitions, 1, topic_configs=dict(configs or {}))
                  for name in names]
        response = await admin.create_topics(topics, timeout_ms=int(timeout_s * 1000))
        errors = response.to_object()["topic_errors"]
        failed = [t for t in errors if t["error_code"] not in (0, _TOPIC_ALREADY_EXISTS)]
        if failed:
            raise ServiceError(f"create_topics failed: {failed}")
        async with asyncio.timeout(timeout_s):
            await _wait_for_leaders(admin, names, partitions)
    except TimeoutError as exc:
        raise ServiceError(
            f"topics {list(names)} have no leader for all {partitions} partition(s) "
            f"after {timeout_s:.0f}s"
        ) from exc
    finally:
        await admin.close()


async def _wait_for_leaders(admin: AIOKafkaAdminClient, names: Sequence[str], n: int) -> None:
    # Polling: topic metadata lives in the broker; there is nothing local to wait on.
    while True:
        if _all_led(await admin.describe_topics(list(names)), n):
            return
        await asyncio.sleep(_POLL_S)


def _all_led(described: list[dict[str, object]], partitions: int) -> bool:
    def ready(topic: dict[str, object]) -> bool:
        parts = topic.get("partitions")
        return (
            topic.get("error_code") == 0
            and isinstance(parts, list)
            and len(parts) == partitions
            and all(isinstance(p, dict) and int(p.get("leader", -1)) >= 0 for p in parts)
        )

    return bool(described) and all(ready(topic) for topic in described)


async def produce(
    bootstrap: str,
    topic: str,
    values: Sequence[bytes],
    keys: Sequence[bytes | None] | None = None,
    headers: Sequence[Sequence[tuple[str, bytes]]] | None = None,
) -> list[RecordMetadata]:
    """Send ``values`` in order (optional per-message keys/headers); return once all are acked.

    Uses an idempotent producer with acks=all, i.e. the settings a governance pipeline wants.
    """
    if keys is not None and len(keys) != len(values):
        raise ValueError("keys and values differ in length")
    if headers is not None and len(headers) != len(values):
        raise ValueError("headers and values differ in length")
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True)
    try:
        await producer.start()
        pending = [
            await producer.send(
                topic,
                value,
                key=None if keys is None else keys[i],
                headers=None if headers is None else list(headers[i]),
            )
            for i, value in enumerate(values)
        ]
        return list(await asyncio.gather(*pending))
    finally:
        await producer.stop()


async def consume_all(
    bootstrap: str, topic: str, expected: int, timeout_s: float = 30.0
) -> list[ConsumerRecord]:
    """Read ``topic`` from the earliest offset (no consumer group, nothing committed).

    Returns as soon as ``expected`` records arrived, or what was read when ``timeout_s`` ends.
    """
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=None,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    records: list[ConsumerRecord] = []
    deadline = time.monotonic() + timeout_s
    try:
        await consumer.start()
        while len(records) < expected and (left := deadline - time.monotonic()) > 0:
            batch = await consumer.getmany(timeout_ms=int(min(left, 0.5) * 1000))
            for partition_records in batch.values():
                records.extend(partition_records)
    finally:
        await consumer.stop()
    return records


async def partition_numbers(bootstrap: str, topic: str) -> list[int]:
    """The partition numbers of an existing ``topic``, sorted (ServiceError if it has none)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        await admin.start()
        described = await admin.describe_topics([topic])
    finally:
        await admin.close()
    numbers = sorted(int(p["partition"]) for t in described if t.get("error_code") == 0
                     for p in t.get("partitions", []))
    if not numbers:
        raise ServiceError(f"topic {topic!r} has no partitions: {described}")
    return numbers


async def end_offsets(bootstrap: str, topic: str) -> dict[int, int]:
    """The end offset (next offset to be written) of each partition of ``topic``, now."""
    partitions = [TopicPartition(topic, n) for n in await partition_numbers(bootstrap, topic)]
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None)
    await consumer.start()
    try:
        ends = await consumer.end_offsets(partitions)
    finally:
        await consumer.stop()
    return {tp.partition: offset for tp, offset in ends.items()}


async def consume_to_end(bootstrap: str, topic: str, timeout_s: float = 60.0, *,
                         isolation_level: str = "read_uncommitted") -> list[ConsumerRecord]:
    """Every record on ``topic`` up to its end offsets taken now, duplicates included
    (``read_committed``: the records of committed transactions, up to the stable end).

    Unlike :func:`consume_all`, the stop condition does not depend on a count, so a topic
    holding redelivered copies is read whole. TimeoutError if the end is not reached.
    """
    partitions = [TopicPartition(topic, n) for n in await partition_numbers(bootstrap, topic)]
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None,
                                enable_auto_commit=False, isolation_level=isolation_level)
    records: list[ConsumerRecord] = []
    await consumer.start()
    try:
        async with asyncio.timeout(timeout_s):
            consumer.assign(partitions)
            await consumer.seek_to_beginning(*partitions)
            ends = await consumer.end_offsets(partitions)
            while [tp for tp, end in ends.items() if await consumer.position(tp) < end]:
                batch = await consumer.getmany(timeout_ms=500)
                for partition_records in batch.values():
                    records.extend(partition_records)
    finally:
        await consumer.stop()
    return records


async def produce_fast(
        bootstrap: str, topic: str, values: Iterable[bytes | None],
        headers: Sequence[Sequence[tuple[str, bytes]]] | None = None,
        keys: Sequence[bytes | None] | None = None) -> list[Any]:
    """Bulk produce, in order (large batches, linger, idempotent): ~10x the rate of
    `produce`, and records up to 16 MB. Returns each record's metadata."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=50,
                                enable_idempotence=True, max_batch_size=1_048_576,
                                max_request_size=16_777_216)
    await producer.start()
    count = 0
    done: list[Any] = []
    try:
        pending: list[asyncio.Future[Any]] = []
        for value in values:
            record_headers = None if headers is None else list(headers[count])
            key = None if keys is None else keys[count]
            pending.append(await producer.send(topic, value, key=key, headers=record_headers))
            count += 1
            if len(pending) >= 50_000:
                done += await asyncio.gather(*pending)
                pending.clear()
        done += await asyncio.gather(*pending)
    finally:
        await producer.stop()
    return done


async def produce_paced(bootstrap: str, topic: str, values: Sequence[bytes],
                        per_second: float, chunk: int = 200) -> None:
    """Produce `values` as a steady stream of about `per_second` records a second."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    await producer.start()
    try:
        started = time.monotonic()
        for first in range(0, len(values), chunk):
            pending = [await producer.send(topic, value)
                       for value in values[first:first + chunk]]
            await asyncio.gather(*pending)
            due = started + (first + chunk) / per_second
            await asyncio.sleep(max(0.0, due - time.monotonic()))
    finally:
        await producer.stop()


async def committed_offsets(bootstrap: str, group_id: str) -> dict[int, int]:
    """The group's committed offset per partition, as the broker has it."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        offsets = await admin.list_consumer_group_offsets(group_id)
    finally:
        await admin.close()
    return {tp.partition: meta.offset for tp, meta in offsets.items()}
