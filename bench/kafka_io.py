"""Broker-side helpers for bench/run.py: fast preload, paced load, reading the output.

Output topics live on a broker with ``log.message.timestamp.type=LogAppendTime``, so a
record's timestamp is the moment the broker acknowledged it.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable, Sequence
from typing import Any

from aiokafka import (  # type: ignore[import-untyped,unused-ignore]
    AIOKafkaConsumer,
    AIOKafkaProducer,
    TopicPartition,
)

from bench.events import sent_ms, stamped_value, templates
from bench.producer_signing import Headers, ProducerSigner

Progress = Callable[[str], None]
_BATCH_BYTES = 1 << 20
_TICK_S = 0.005


def _producer(bootstrap: str, **options: Any) -> AIOKafkaProducer:
    return AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True,
                            **options)


def _headers(signer: ProducerSigner | None, value: bytes, n: int) -> Headers:
    return signer.headers(value, n) if signer else []


async def preload(bootstrap: str, topic: str, values: Sequence[bytes], partitions: int,
                  progress: Progress, signer: ProducerSigner | None = None) -> None:
    """Put ``values`` on ``topic`` round-robin over its partitions, in 1 MiB record batches
    (idempotent, acks=all), each record signed by ``signer`` when given (as it is batched:
    its timestamp is fresh when the broker appends it); return once the broker acknowledged
    all of them."""
    producer = _producer(bootstrap, max_batch_size=_BATCH_BYTES, linger_ms=50)
    await producer.start()
    try:
        pending: list[asyncio.Future[Any]] = []
        for partition in range(partitions):
            batch = producer.create_batch()
            for n in range(partition, len(values), partitions):
                value, headers = values[n], _headers(signer, values[n], n)
                if batch.append(key=None, value=value, timestamp=None, headers=headers) is None:
                    pending.append(await producer.send_batch(batch, topic, partition=partition))
                    batch = producer.create_batch()
                    batch.append(key=None, value=value, timestamp=None, headers=headers)
            pending.append(await producer.send_batch(batch, topic, partition=partition))
        await asyncio.gather(*pending)
        progress(f"preloaded {len(values):,} events")
    finally:
        await producer.stop()


async def paced_load(bootstrap: str, topic: str, rate: float, count: int,
                     signer: ProducerSigner | None = None) -> None:
    """Send ``count`` events at ``rate`` per second, each stamped with its send time and
    signed by ``signer`` when given."""
    shapes = templates()
    producer = _producer(bootstrap)
    await producer.start()
    try:
        pending: list[asyncio.Future[Any]] = []
        started, sent = time.monotonic(), 0
        while sent < count:
            due = min(count, int((time.monotonic() - started) * rate) + 1)
            for n in range(sent, due):
                value = stamped_value(random.choice(shapes))
                pending.append(await producer.send(topic, value,
                                                   headers=_headers(signer, value, n)))
            sent = due
            await asyncio.sleep(_TICK_S)
        await asyncio.gather(*pending)
    finally:
        await producer.stop()


# How far before the end `last_ack_ms` starts reading: past the commit markers a few
# transactions leave at the end of a partition.
MARKERS_LOOKBACK = 64


class OutputTopic:
    """Reads an output topic without a consumer group: counts, last ack, latencies."""

    def __init__(self, bootstrap: str, topic: str, partitions: int) -> None:
        self._consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None,
                                          enable_auto_commit=False)
        self._tps = [TopicPartition(topic, p) for p in range(partitions)]

    async def __aenter__(self) -> OutputTopic:
        await self._consumer.start()
        self._consumer.assign(self._tps)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._consumer.stop()

    async def count(self) -> int:
        """Records on the topic now (sum of the partitions' end offsets)."""
        ends = await self._consumer.end_offsets(self._tps)
        return int(sum(ends.values()))

    async def wait_for(self, expected: int, progress: Progress, timeout_s: float) -> None:
        """Poll until ``expected`` records are on the topic; TimeoutError past the limit."""
        async with asyncio.timeout(timeout_s):
            while (have := await self.count()) < expected:
                progress(f"{have:,}/{expected:,} events out")
                await asyncio.sleep(0.2)

    async def last_ack_ms(self) -> float:
        """The latest LogAppendTime on the topic (timestamps only grow per partition).

        The last offsets may be transaction markers (exactly-once output), which a
        consumer never returns: read from a little before the end."""
        ends = await self._consumer.end_offsets(self._tps)
        latest = 0.0
        for tp, end in ends.items():
            if end == 0:
                continue
            self._consumer.seek(tp, max(0, end - MARKERS_LOOKBACK))
            while await self._consumer.position(tp) < end:
                records = await self._consumer.getmany(tp, timeout_ms=5000)
                if not records.get(tp):
                    break
                latest = max([latest, *(r.timestamp for r in records[tp])])
        return latest

    async def latencies_ms(self, expected: int, warmup_s: float = 0.0) -> list[float]:
        """Ack time minus embedded send time for every output record sent ``warmup_s`` or
        more after the first one (the start-up transient is not steady-state latency)."""
        for tp in self._tps:
            self._consumer.seek(tp, 0)
        pairs: list[tuple[float, float]] = []
        async with asyncio.timeout(120):
            while len(pairs) < expected:
                fetched = await self._consumer.getmany(timeout_ms=500, max_records=5000)
                for record in (r for rs in fetched.values() for r in rs):
                    sent = sent_ms(record.value)
                    if sent is not None:
                        pairs.append((sent, record.timestamp - sent))
        cutoff = min(sent for sent, _ in pairs) + warmup_s * 1000
        return [latency for sent, latency in pairs if sent >= cutoff]
