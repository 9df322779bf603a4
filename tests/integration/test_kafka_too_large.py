"""Records a topic refuses as too large (its max.message.bytes below the record) on the
real broker: each ends in one counter, the rest flows, the offsets reach the end.

- Exactly-once into an output topic of max.message.bytes 4096: an event whose signed
  record is larger is counted failed (`message_size_too_large_error`) and dead-lettered in
  the partition's transaction; the others are on the output for read_committed readers.
- At least once into the same: only such an event is counted failed and dead-lettered;
  every other event is on the output exactly once and counted delivered. The sink alone,
  not knowing the limit, on the broker's refusals: the same events fail, the rest is
  written once.
- A dead-letter topic of max.message.bytes 4096: an entry larger than that is written as
  its summary.
- The margin: a record measured at exactly the limit the daemon computes is taken."""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer

from pipeline.kafka_limits import RecordLimit, record_bytes
from pipeline.model import Position, SignedEvent
from sinks.base import SinkError
from sinks.kafka import KafkaSink
from tests.support.events import event_value
from tests.support.identities import assert_reconciled
from tests.support.infra.kafka import KafkaBroker
from tests.support.kafka_clients import (
    committed_offsets,
    consume_to_end,
    create_topics,
    produce_fast,
)
from tests.support.metrics import metric_value
from tests.support.processes import GovpipeProcess, run_env
from tests.support.waiting import eventually_async

pytestmark = pytest.mark.integration

COUNT = 300
BIG_EVERY = 50  # every 50th event carries ~6 KB: its signed record is over 4096 bytes
SMALL_TOPIC = {"max.message.bytes": "4096"}


def big_event(number: int, prefix: str) -> bytes:
    return event_value(number, prefix).replace(
        b'"attributes":{', b'"attributes":{"padding":"%s",' % (b"p" * 6000))


def inputs(prefix: str) -> list[bytes]:
    return [big_event(n, prefix) if n % BIG_EVERY == 0 else event_value(n, prefix)
            for n in range(COUNT)]


async def all_committed(bootstrap: str, group: str, count: int) -> None:
    async def done() -> bool:
        return sum((await committed_offsets(bootstrap, group)).values()) == count
    await eventually_async(done, 120)


async def run_into_small_topic(kafka_broker: KafkaBroker, tmp_path: Path, prefix: str,
                               env: dict[str, str]
                               ) -> tuple[GovpipeProcess, str, str, str]:
    """`inputs(prefix)` through a daemon (`env` on top of a Kafka sink and a Kafka
    dead-letter) into an output topic of max.message.bytes 4096, until every offset is
    committed (was: the partitions stalled). Returns the daemon, its last scrape
    (reconciled) and the output and dead-letter topics."""
    bootstrap, name = kafka_broker.bootstrap, uuid.uuid4().hex[:8]
    source, out, dlq, group = (f"big-in-{name}", f"big-out-{name}", f"big-dlq-{name}",
                               name)
    await create_topics(bootstrap, [source], partitions=2)
    await create_topics(bootstrap, [out], partitions=2, configs=SMALL_TOPIC)
    await create_topics(bootstrap, [dlq])
    await produce_fast(bootstrap, source, inputs(prefix))
    daemon = GovpipeProcess(run_env(bootstrap, source, group, tmp_path, **{
        "GOVPIPE_SINKS__STDOUT__ENABLED": "false", "GOVPIPE_SINKS__KAFKA__ENABLED": "true",
        "GOVPIPE_SINKS__KAFKA__TOPIC": out, "GOVPIPE_DEADLETTER__KIND": "kafka",
        "GOVPIPE_DEADLETTER__TOPIC": dlq, **env}), tmp_path, prefix)
    try:
        await daemon.start()
        await all_committed(bootstrap, group, COUNT)
        final = await daemon.settled_scrape()
        assert_reconciled(final)
        assert await daemon.terminate() == 0
    finally:
        await daemon.ensure_stopped()
    return daemon, final, out, dlq


async def test_exactly_once_fails_an_event_over_the_output_topic_limit_alone(
        kafka_broker: KafkaBroker, tmp_path: Path) -> None:
    daemon, final, out, dlq = await run_into_small_topic(
        kafka_broker, tmp_path, "x", {"GOVPIPE_SINKS__KAFKA__EXACTLY_ONCE": "true"})
    bootstrap = kafka_broker.bootstrap
    # The big events never reach a transaction, and the record batches stay within the
    # topic's limit (was: each transaction failed once, refused as a whole batch).
    assert not [entry for entry in daemon.log_entries()
                if str(entry.get("message", "")).startswith("transaction failed")]
    big = {f"x-{n:08d}" for n in range(0, COUNT, BIG_EVERY)}
    assert metric_value(final, "govpipe_sink_failed_total", sink="kafka",
                        reason="message_size_too_large_error") == len(big)
    assert metric_value(final, "govpipe_sink_delivered_total", sink="kafka") == COUNT - len(big)
    assert metric_value(final, "govpipe_deadletter_written_total", origin="kafka") == len(big)
    output = await consume_to_end(bootstrap, out, isolation_level="read_committed")
    delivered = {json.loads(r.value)["id"] for r in output}
    assert delivered == {f"x-{n:08d}" for n in range(COUNT)} - big
    assert len(output) == COUNT - len(big)
    entries = [json.loads(r.value) for r in await consume_to_end(
        bootstrap, dlq, isolation_level="read_committed")]
    assert {e["event"]["id"] if "event" in e else e["event_id"] for e in entries} == big
    assert {(e["origin"], e["reason"]) for e in entries} == {
        ("kafka", "message_size_too_large_error")}


async def test_at_least_once_fails_an_event_over_the_output_topic_limit_alone(
        kafka_broker: KafkaBroker, tmp_path: Path) -> None:
    _, final, out, dlq = await run_into_small_topic(kafka_broker, tmp_path, "a", {})
    bootstrap = kafka_broker.bootstrap
    big = {f"a-{n:08d}" for n in range(0, COUNT, BIG_EVERY)}
    # Was: every event of a batch holding a big one counted failed and dead-lettered,
    # though all but that one were on the output.
    assert metric_value(final, "govpipe_sink_failed_total", sink="kafka",
                        reason="message_size_too_large_error") == len(big)
    assert metric_value(final, "govpipe_sink_delivered_total", sink="kafka") == COUNT - len(big)
    assert metric_value(final, "govpipe_deadletter_written_total", origin="kafka") == len(big)
    delivered = [json.loads(r.value)["id"] for r in await consume_to_end(bootstrap, out)]
    assert sorted(delivered) == sorted({f"a-{n:08d}" for n in range(COUNT)} - big)
    entries = [json.loads(r.value) for r in await consume_to_end(bootstrap, dlq)]
    assert sorted(e["event"]["id"] for e in entries) == sorted(big)
    assert {(e["origin"], e["reason"]) for e in entries} == {
        ("kafka", "message_size_too_large_error")}


async def test_the_sink_not_knowing_the_limit_fails_the_records_the_broker_refuses_alone(
        kafka_broker: KafkaBroker) -> None:
    bootstrap, out = kafka_broker.bootstrap, f"alo-sink-{uuid.uuid4().hex[:8]}"
    await create_topics(bootstrap, [out], partitions=2, configs=SMALL_TOPIC)
    batch = [SignedEvent(f"s-{n}", {"id": f"s-{n}"}, json.dumps({"id": f"s-{n}", "pad": (
        "p" * 6000 if n % BIG_EVERY == 7 else "")}).encode(), Position("in", 0, n),
        partition_key=f"agent-{n % 5}") for n in range(COUNT)]
    big = sorted(e.id for n, e in enumerate(batch) if n % BIG_EVERY == 7)
    sink = KafkaSink(bootstrap, out, timeout_s=10)
    try:
        with pytest.raises(SinkError) as raised:
            await sink.send(batch)
    finally:
        await sink.aclose()
    error = raised.value
    assert (error.retriable, error.reason) == (False, "message_size_too_large_error")
    assert sorted(e.id for e in error.only or []) == big  # was: None, the whole batch
    written = [json.loads(r.value)["id"] for r in await consume_to_end(bootstrap, out)]
    assert sorted(written) == sorted(e.id for e in batch if e.id not in big)


async def test_dead_letter_entries_over_the_topic_limit_are_written_as_summaries(
        kafka_broker: KafkaBroker, tmp_path: Path) -> None:
    bootstrap, name = kafka_broker.bootstrap, uuid.uuid4().hex[:8]
    source, dlq, group = f"bad-in-{name}", f"bad-dlq-{name}", name
    await create_topics(bootstrap, [source])
    await create_topics(bootstrap, [dlq], configs=SMALL_TOPIC)
    bad = set(range(0, COUNT, 10))  # not JSON, ~6 KB: rejected invalid_json
    await produce_fast(bootstrap, source, [b"{not json " + b"z" * 6000 if n in bad
                                           else event_value(n, "y") for n in range(COUNT)])
    daemon = GovpipeProcess(run_env(bootstrap, source, group, tmp_path, **{
        "GOVPIPE_DEADLETTER__KIND": "kafka", "GOVPIPE_DEADLETTER__TOPIC": dlq}),
        tmp_path, "alo")
    try:
        await daemon.start()
        await all_committed(bootstrap, group, COUNT)  # was: the dead-letter write stalled
        final = await daemon.settled_scrape()
        assert_reconciled(final)
        assert await daemon.terminate() == 0
    finally:
        await daemon.ensure_stopped()
    assert metric_value(final, "govpipe_source_rejected_total",
                        reason="invalid_json") == len(bad)
    entries = [json.loads(r.value) for r in await consume_to_end(bootstrap, dlq)]
    assert sorted(e["source"]["offset"] for e in entries) == sorted(bad)
    assert all(e["truncated"] and e["value_bytes"] == 6010 for e in entries)
    assert len(daemon.lines()) == COUNT - len(bad)


async def test_a_record_at_the_computed_limit_is_taken(kafka_broker: KafkaBroker) -> None:
    bootstrap, topic = kafka_broker.bootstrap, f"edge-{uuid.uuid4().hex[:8]}"
    await create_topics(bootstrap, [topic], configs=SMALL_TOPIC)
    limit = await RecordLimit({"bootstrap_servers": bootstrap}, topic).get()
    headers = [(f"ce_{n}", b"v" * 20) for n in range(12)]
    value = os.urandom(limit)  # incompressible: compression framing only adds bytes
    while record_bytes(b"key", value, headers) > limit:
        value = value[:-1]
    assert record_bytes(b"key", value, headers) == limit
    for compression in (None, "gzip", "lz4", "zstd", "snappy"):
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap,
                                    transactional_id=uuid.uuid4().hex,
                                    compression_type=compression)
        await producer.start()
        try:
            async with producer.transaction():
                await (await producer.send(topic, value, key=b"key", headers=headers))
        finally:
            await producer.stop()
