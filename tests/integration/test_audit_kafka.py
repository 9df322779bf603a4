"""`govpipe audit` over Kafka topics, against the real broker: `govpipe run` consumes the
input topic, writes the Kafka sink's topic and a Kafka (or file) dead-letter; the audit
accounts for every input offset. A SIGKILL mid-stream leaves duplicates on the output,
never a gap; input removed by retention is reported as such, not as missing."""

from __future__ import annotations

import asyncio
import base64
import json
import uuid
from pathlib import Path

import pytest
from aiokafka import TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, RecordsToDelete
from aiokafka.errors import GroupCoordinatorNotAvailableError

from tests.support.daemons import KEY
from tests.support.events import event_value
from tests.support.infra.kafka import KafkaBroker
from tests.support.kafka_clients import committed_offsets, create_topics, produce_fast
from tests.support.processes import GOVPIPE, GovpipeProcess, run_env
from tests.support.waiting import eventually_async

pytestmark = pytest.mark.integration

GARBAGE_EVERY = 500  # every 500th record is not JSON: dead-lettered, not delivered


def values(count: int) -> list[bytes]:
    return [b"{not json" if n % GARBAGE_EVERY == 0 else event_value(n, "aud")
            for n in range(count)]


async def run_to_the_end(env: dict[str, str], tmp_path: Path, bootstrap: str, group: str,
                         count: int, name: str) -> None:
    daemon = GovpipeProcess(env, tmp_path, name)
    try:
        await daemon.start()

        async def all_committed() -> bool:
            try:
                return sum((await committed_offsets(bootstrap, group)).values()) == count
            except GroupCoordinatorNotAvailableError:  # a fresh broker's offsets topic
                return False
        await eventually_async(all_committed, 120)
        assert await daemon.terminate() == 0
    finally:
        await daemon.ensure_stopped()


async def audit(tmp_path: Path, bootstrap: str, topic: str, out_topic: str,
                *deadletter: str) -> tuple[int, list[str], str]:
    key_file = tmp_path / "key"
    key_file.write_text(base64.b64encode(KEY).decode())
    proc = await asyncio.create_subprocess_exec(
        str(GOVPIPE), "audit", "--key", str(key_file), "--bootstrap-servers", bootstrap,
        "--input-topic", topic, "--output-topic", out_topic,
        *(deadletter or ("--deadletter", str(tmp_path / "dlq"))), "--json",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    stdout, stderr = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode is not None
    return proc.returncode, stdout.decode().splitlines(), stderr.decode()


def kafka_env(bootstrap: str, topic: str, out_topic: str, group: str, tmp_path: Path,
              **overrides: str) -> dict[str, str]:
    return run_env(bootstrap, topic, group, tmp_path, GOVPIPE_SINKS__STDOUT__ENABLED="false",
                   GOVPIPE_SINKS__KAFKA__ENABLED="true", GOVPIPE_SINKS__KAFKA__TOPIC=out_topic,
                   GOVPIPE_SINKS__KAFKA__BATCH_SIZE="200", **overrides)


async def test_a_clean_run_is_all_delivered_and_retention_is_not_missing(
        kafka_broker: KafkaBroker, tmp_path: Path) -> None:
    bootstrap, count, rejected = kafka_broker.bootstrap, 3_000, 3_000 // GARBAGE_EVERY
    tag = uuid.uuid4().hex[:8]
    topic, out_topic, dlq, group = (f"audit-in-{tag}", f"audit-out-{tag}", f"audit-dlq-{tag}",
                                    f"g-{tag}")
    await create_topics(bootstrap, [topic, out_topic, dlq], partitions=2)
    await produce_fast(bootstrap, topic, values(count))
    env = kafka_env(bootstrap, topic, out_topic, group, tmp_path,
                    GOVPIPE_DEADLETTER__KIND="kafka", GOVPIPE_DEADLETTER__TOPIC=dlq)
    await run_to_the_end(env, tmp_path, bootstrap, group, count, "run")

    code, lines, stderr = await audit(tmp_path, bootstrap, topic, out_topic,
                                      "--deadletter-topic", dlq)
    assert lines[-1] == (f"input {count}, delivered {count - rejected}, dead-lettered "
                         f"{rejected}, missing 0, duplicates 0, bad signatures 0"), stderr
    assert json.loads(lines[0])["clean"] is True
    assert code == 0

    # Retention takes the first 100 records of partition 0: gone, not missing, and their
    # events on the output are no unknown positions.
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.delete_records({TopicPartition(topic, 0): RecordsToDelete(100)})
    finally:
        await admin.close()
    code, lines, stderr = await audit(tmp_path, bootstrap, topic, out_topic,
                                      "--deadletter-topic", dlq)
    report = json.loads(lines[0])
    assert report["removed_by_retention"] == [
        {"kind": "kafka", "name": topic, "partition": 0, "first": 0, "last": 99,
         "note": "not audited"}]
    assert (report["input"], report["missing"], report["unknown"]) == (count - 100, 0, 0)
    assert code == 0, stderr


async def test_sigkill_then_restart_audits_duplicates_and_nothing_missing(
        kafka_broker: KafkaBroker, tmp_path: Path) -> None:
    bootstrap, count, rejected = kafka_broker.bootstrap, 10_000, 10_000 // GARBAGE_EVERY
    topic, out_topic, group = (f"audit-kill-{uuid.uuid4().hex[:8]}",
                               f"audit-kill-out-{uuid.uuid4().hex[:8]}", f"g-{uuid.uuid4().hex}")
    await create_topics(bootstrap, [topic, out_topic], partitions=2)
    await produce_fast(bootstrap, topic, values(count))
    env = kafka_env(bootstrap, topic, out_topic, group, tmp_path)
    first = GovpipeProcess(env, tmp_path, "first")
    try:
        await first.start()
        delivered = 0.0
        while delivered < 1_500:
            delivered = await first.value("govpipe_sink_delivered_total", sink="kafka")
        await first.kill()
        assert delivered < count - rejected, "the kill must land mid-stream"
    finally:
        await first.ensure_stopped()
    await run_to_the_end(env, tmp_path, bootstrap, group, count, "second")

    code, lines, stderr = await audit(tmp_path, bootstrap, topic, out_topic)
    report = json.loads(lines[0])
    assert (report["input"], report["delivered"], report["dead_lettered"]) == (
        count, count - rejected, rejected), stderr
    assert (report["missing"], report["bad_signatures"], report["unknown"]) == (0, 0, 0)
    assert report["duplicates"] > 0, "a kill mid-stream redelivers the uncommitted tail"
    assert all(span["note"].endswith(", byte-identical")
               for span in report["duplicate_positions"])
    assert lines[-1].endswith(f"missing 0, duplicates {report['duplicates']}, "
                              "bad signatures 0")
    assert code == 0
    print(f"\naudit after SIGKILL: {lines[-1]}")
