"""Compressed Kafka both ways: input a producer compressed with each codec is read, and the
Kafka sink compresses its output as `sinks.kafka.compression_type` says."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer

from tests.support.events import event_value
from tests.support.infra.kafka import KafkaBroker
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
    for number, codec in enumerate(CODECS):
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, compression_type=codec)
        await producer.start()
        try:
            await producer.send_and_wait(topic, event_value(number, "cz"))
        finally:
            await producer.stop()
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


async def delivered(daemon: GovpipeProcess, count: int) -> bool:
    return await daemon.value("govpipe_sink_delivered_total", sink="kafka") >= count
