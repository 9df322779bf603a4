"""Signed events through the Kafka sink onto a real broker in both CloudEvents content modes,
decoded with the `cloudevents` SDK's Kafka binding and verified; then the real `govpipe run`
delivering to Kafka and to an OpenTelemetry Collector at once."""

from __future__ import annotations

import asyncio
import base64
import json
import secrets
import sys
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

import pytest
from aiokafka.partitioner import DefaultPartitioner
from aiokafka.structs import ConsumerRecord
from cloudevents.core.base import BaseCloudEvent
from cloudevents.core.bindings.kafka import KafkaMessage, from_binary, from_structured
from cloudevents.core.formats.json import JSONFormat

from pipeline.model import SignedEvent
from pipeline.signing.signers import HmacSigner
from sinks.base import SinkError
from sinks.kafka import KafkaSink
from tests.support.events import EXAMPLES, TEST_KEY, example_lines, signed_examples
from tests.support.infra.collector import Collector
from tests.support.infra.kafka import KafkaBroker
from tests.support.kafka_clients import consume_all, consume_to_end, create_topics

pytestmark = pytest.mark.integration

GOVPIPE = Path(sys.executable).parent / "govpipe"
Mode = Literal["structured", "binary"]


def _decode(record: ConsumerRecord, mode: Mode) -> tuple[BaseCloudEvent, str]:
    """The SDK's CloudEvent for a record, and the record's original `time` text."""
    headers = {name: value for name, value in record.headers}
    message = KafkaMessage(headers=headers, key=record.key, value=record.value)
    if mode == "binary":
        return from_binary(message, JSONFormat()), headers["ce_time"].decode()
    return from_structured(message, JSONFormat()), json.loads(record.value)["time"]


def _signed_dict(event: BaseCloudEvent, raw_time: str) -> dict[str, Any]:
    """The envelope as it was signed. The SDK parses `time` into a datetime; the signature
    covers the original text, so that is put back (after checking it is the same instant)."""
    attributes = dict(event.get_attributes())
    assert attributes["time"] == datetime.fromisoformat(raw_time)
    attributes["time"] = raw_time
    attributes["data"] = event.get_data()
    return attributes


@pytest.mark.parametrize("mode", ["structured", "binary"])
async def test_records_decode_with_the_sdk_and_verify(
    kafka_broker: KafkaBroker, kafka_topic: str, mode: Mode
) -> None:
    events = signed_examples()
    sink = KafkaSink(kafka_broker.bootstrap, kafka_topic, content_mode=mode, timeout_s=10)
    try:
        await sink.send(events[:20])
        await sink.send(events[20:])
    finally:
        await sink.aclose()

    records = await consume_all(kafka_broker.bootstrap, kafka_topic, len(events))
    assert len(records) == len(events)
    signer = HmacSigner(TEST_KEY)
    for record, sent in zip(records, events, strict=True):
        decoded, raw_time = _decode(record, mode)
        envelope = _signed_dict(decoded, raw_time)
        assert signer.verify(envelope), f"{sent.id} does not verify after decoding"
        assert envelope == dict(sent.attributes)
        assert record.key == sent.attributes["partitionkey"].encode()
        content_type = dict(record.headers)["content-type"]
        assert content_type == (b"application/json" if mode == "binary"
                                else b"application/cloudevents+json; charset=UTF-8")


def _run_env(key: bytes, broker: KafkaBroker, topic: str, collector: Collector) -> dict[str, str]:
    return {
        "PATH": "/usr/bin:/bin",
        "GOVPIPE_SIGNING_KEY": base64.b64encode(key).decode(),
        "GOVPIPE_SERVER__LISTEN": "127.0.0.1:0",
        "GOVPIPE_SINKS__KAFKA__ENABLED": "true",
        "GOVPIPE_SINKS__KAFKA__CONNECTION__BOOTSTRAP_SERVERS": broker.bootstrap,
        "GOVPIPE_SINKS__KAFKA__TOPIC": topic,
        "GOVPIPE_SINKS__OTLP__ENABLED": "true",
        "GOVPIPE_SINKS__OTLP__ENDPOINT": collector.grpc_endpoint,
    }


async def test_govpipe_run_delivers_to_kafka_and_the_collector(
    tmp_path: Path, kafka_broker: KafkaBroker, kafka_topic: str,
    fresh_otel_collector: Collector,
) -> None:
    key = secrets.token_bytes(32)
    ids = [json.loads(line)["event_id"] for line in example_lines()]
    proc = await asyncio.create_subprocess_exec(
        str(GOVPIPE), "run", cwd=tmp_path,
        env=_run_env(key, kafka_broker, kafka_topic, fresh_otel_collector),
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE)
    stdout, stderr = await asyncio.wait_for(proc.communicate(EXAMPLES.read_bytes()), 120)
    assert proc.returncode == 0, stderr.decode()[-3000:]

    signer = HmacSigner(key)
    on_stdout = [json.loads(line) for line in stdout.splitlines()]
    records = await consume_all(kafka_broker.bootstrap, kafka_topic, len(ids))
    on_kafka = [json.loads(record.value) for record in records]
    in_collector = [json.loads(r.body) for r in fresh_otel_collector.wait_for_log_records(len(ids))]
    for delivered in (on_stdout, on_kafka, in_collector):
        assert sorted(ce["id"] for ce in delivered) == sorted(ids)
        assert all(signer.verify(ce) for ce in delivered)
    assert [r.key.decode() for r in records] == [ce["partitionkey"] for ce in on_kafka]


async def test_a_stopped_broker_fails_retriably_within_the_timeout(
    kafka_broker: KafkaBroker, kafka_topic: str
) -> None:
    # aiokafka's idempotent producer never expires a batch on its own; the sink must.
    events = signed_examples()
    sink = KafkaSink(kafka_broker.bootstrap, kafka_topic, timeout_s=3)
    try:
        await sink.send(events[:5])
        kafka_broker.stop()
        try:
            with pytest.raises(SinkError) as caught:
                await asyncio.wait_for(sink.send(events[5:10]), 15)
            assert caught.value.retriable
            assert caught.value.reason == "kafka_timeout_error"
        finally:
            kafka_broker.start()
        # The dispatcher's retries, once the broker is back: a restarted broker on a busy
        # machine can take longer than one 3 s attempt to answer again.
        async with asyncio.timeout(60):
            while True:
                try:
                    await sink.send(events[5:10])
                    break
                except SinkError as exc:
                    if not exc.retriable:
                        raise
    finally:
        await sink.aclose()

    records = await consume_to_end(kafka_broker.bootstrap, kafka_topic)
    # At least once: the timed-out batch may land too, before its retry.
    assert {json.loads(r.value)["id"] for r in records} == {e.id for e in events[:10]}


async def test_each_key_lands_on_the_partition_the_default_partitioner_picks(
        kafka_broker: KafkaBroker) -> None:
    """The sink groups a batch by partition itself (one partitioner call per distinct key):
    the placement must still be the Java-compatible murmur2 one, for every key."""
    topic = f"keyed-{secrets.token_hex(4)}"
    await create_topics(kafka_broker.bootstrap, [topic], partitions=5)
    template = signed_examples()[0]
    events = [SignedEvent(f"e{n}", template.attributes, template.body, template.position,
                          partition_key=f"agent-{n % 37}") for n in range(400)]
    sink = KafkaSink(kafka_broker.bootstrap, topic, timeout_s=10)
    try:
        await sink.send(events)
    finally:
        await sink.aclose()
    records = await consume_to_end(kafka_broker.bootstrap, topic)
    assert len(records) == len(events)
    partitions = list(range(5))
    pick = DefaultPartitioner()
    assert all(r.partition == pick(r.key, partitions, partitions) for r in records)
    assert len({r.partition for r in records}) > 1  # the keys really spread


async def test_a_record_batch_over_the_topic_limit_is_split_not_failed(
        kafka_broker: KafkaBroker) -> None:
    """A topic's max.message.bytes below record_batch_bytes: the broker refuses the record
    batch as too large; the sink halves it until it fits and delivers every event once,
    also on partitions it wrote before (the refusal leaves a gap in the idempotent
    producer's sequence numbers). Only a single record over the limit is a
    (non-retriable) failure, and the sink goes on working after it."""
    topic = f"small-{secrets.token_hex(4)}"
    await create_topics(kafka_broker.bootstrap, [topic], partitions=2,
                        configs={"max.message.bytes": "60000"})
    first = signed_examples(unique_ids=True)  # 42 events, ~900 B each: under the limit
    big = [e for _ in range(12) for e in signed_examples(unique_ids=True)]  # ~500 events
    more = [e for _ in range(4) for e in signed_examples(unique_ids=True)]
    after = signed_examples(unique_ids=True)
    template = first[0]
    huge = SignedEvent("huge", template.attributes, b"x" * 70_000, template.position,
                       partition_key=template.partition_key)
    sink = KafkaSink(kafka_broker.bootstrap, topic, timeout_s=10)
    try:
        await sink.send(first)  # the producer now has sequence state on both partitions
        await sink.send(big)
        assert sink.record_batch_bytes < 1_048_576  # learned from the refusals
        await sink.send(more)
        with pytest.raises(SinkError) as refused:
            await sink.send([huge])
        await sink.send(after)
    finally:
        await sink.aclose()
    assert (refused.value.retriable, refused.value.reason) == (
        False, "message_size_too_large_error")
    records = await consume_to_end(kafka_broker.bootstrap, topic)
    expected = first + big + more + after
    assert sorted(r.value for r in records) == sorted(e.body for e in expected)
