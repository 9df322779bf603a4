"""Compressed Kafka both ways: input a producer compressed with each codec is read, and the
Kafka sink compresses its output as `sinks.kafka.compression_type` says.

A consumer sees records already decompressed, so the codecs are read where they are kept:
the record batches in the broker's segment files (Kafka's ``DumpLogSegments``)."""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer

from tests.support.events import event_value
from tests.support.infra.kafka import KafkaBroker
from tests.support.infra.kafka_segments import record_batches
from tests.support.kafka_clients import consume_to_end, create_topics
from tests.support.processes import GovpipeProcess, run_env
from tests.support.waiting import eventually_async

pytestmark = pytest.mark.integration

CODECS = ("gzip", "snappy", "lz4", "zstd")


async def test_compressed_input_is_read_and_output_compressed(kafka_broker: KafkaBroker,
                                                              tmp_path: Path) -> None:
    bootstrap, suffix = kafka_broker.bootstrap, uuid.uuid4().hex[:8]
    topic, out = f"in-{suffix}", f"out-{suffix}"
    await create_topics(bootstrap, [topic, out])
    await produce_one_per_codec(bootstrap, topic)
    env = run_env(bootstrap, topic, f"g-{suffix}", tmp_path,
                  GOVPIPE_SINKS__STDOUT__ENABLED="false", GOVPIPE_SINKS__KAFKA__ENABLED="true",
                  GOVPIPE_SINKS__KAFKA__TOPIC=out, GOVPIPE_SINKS__KAFKA__COMPRESSION_TYPE="zstd",
                  GOVPIPE_SINKS__KAFKA__LINGER_MS="5")
    daemon = GovpipeProcess(env, tmp_path, "run")
    try:
        await daemon.start()
        await eventually_async(lambda: delivered(daemon, len(CODECS)), 60)
        assert await daemon.terminate() == 0
    finally:
        await daemon.ensure_stopped()
    records = await consume_to_end(bootstrap, out)
    assert sorted(json.loads(r.value)["id"] for r in records) == [
        f"cz-{n:08d}" for n in range(len(CODECS))]

    # One batch per producer, each as that producer compressed it.
    in_batches = await asyncio.to_thread(record_batches, kafka_broker, topic)
    assert [batch.codec for batch in in_batches] == list(CODECS), in_batches
    # Every record the sink wrote is in a zstd batch (linger.ms may have made one or more).
    out_batches = await asyncio.to_thread(record_batches, kafka_broker, out)
    assert {batch.codec for batch in out_batches} == {"zstd"}, out_batches
    assert sum(batch.count for batch in out_batches) == len(CODECS), out_batches


async def produce_one_per_codec(bootstrap: str, topic: str) -> None:
    """One event per codec, each from its own producer (so each is a batch of its own)."""
    for number, codec in enumerate(CODECS):
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, compression_type=codec)
        await producer.start()
        try:
            await producer.send_and_wait(topic, event_value(number, "cz"))
        finally:
            await producer.stop()


async def delivered(daemon: GovpipeProcess, count: int) -> bool:
    return await daemon.value("govpipe_sink_delivered_total", sink="kafka") >= count
