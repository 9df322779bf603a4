"""The baseline: a bare aiokafka consume → produce passthrough, no parsing, no signing.

    python -m bench.passthrough BOOTSTRAP IN_TOPIC OUT_TOPIC GROUP

Same delivery settings as govpipe's Kafka sink (idempotent, acks=all) and the same fetch
size; offsets auto-committed. Prints ``{"first_consume": <unix s>}`` on stdout at the first
non-empty fetch and ``{"assigned": n}`` once it owns partitions; runs until SIGTERM.
"""

from __future__ import annotations

import asyncio
import signal
import sys
import time
from typing import Any

import orjson
from aiokafka import (  # type: ignore[import-untyped,unused-ignore]
    AIOKafkaConsumer,
    AIOKafkaProducer,
)


def _say(**fields: Any) -> None:
    sys.stdout.write(orjson.dumps(fields).decode() + "\n")
    sys.stdout.flush()


async def _forward(consumer: AIOKafkaConsumer, producer: AIOKafkaProducer, out: str,
                   stop: asyncio.Event) -> None:
    first, assigned = True, False
    while not stop.is_set():
        fetched = await consumer.getmany(timeout_ms=200, max_records=500)
        if not assigned and consumer.assignment():
            _say(assigned=len(consumer.assignment()))
            assigned = True
        if first and fetched:
            _say(first_consume=time.time())
            first = False
        pending = [await producer.send(out, r.value, key=r.key)
                   for records in fetched.values() for r in records]
        await asyncio.gather(*pending)


async def passthrough(bootstrap: str, source: str, out: str, group: str) -> None:
    """Forward every record of ``source`` to ``out`` until SIGTERM."""
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    consumer = AIOKafkaConsumer(source, bootstrap_servers=bootstrap, group_id=group,
                                auto_offset_reset="earliest", enable_auto_commit=True)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all",
                                enable_idempotence=True)
    await consumer.start()
    await producer.start()
    try:
        await _forward(consumer, producer, out, stop)
    finally:
        await producer.stop()
        await consumer.stop()


if __name__ == "__main__":
    asyncio.run(passthrough(*sys.argv[1:5]))
