"""Inbound producer signatures against a real broker (issue 7): good, replayed, expired,
forged, unsigned records; a full nonce store; redelivery after a restart; two replicas;
`govpipe publish` into `govpipe run`; the Agent OS-shaped publishing sink."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import socket
import uuid
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer

from pipeline.inbound.signed_string import sign_record
from pipeline.inbound.verifier import wall_clock_ms
from pipeline.publisher import AgentOsSink, ExportResult
from pipeline.settings import SinkSettings
from tests.support.daemons import RunningDaemon, kafka_settings
from tests.support.events import numbered_events
from tests.support.fakes import FlakySink, MemorySink
from tests.support.infra.kafka import KafkaBroker
from tests.support.kafka_clients import consume_all, create_topics, produce
from tests.support.processes import GOVPIPE, GovpipeProcess, complete_lines, run_env
from tests.support.waiting import eventually

KEY = bytes(range(100, 132))
Headers = list[tuple[str, bytes]]


def headers(value: bytes, *, nonce: str | None = None, ts: int | None = None,
            key: bytes = KEY, sender: str = "agent-a") -> Headers:
    nonce = nonce or uuid.uuid4().hex
    ts = wall_clock_ms() if ts is None else ts
    return [("agt-nonce", nonce.encode()), ("agt-timestamp", str(ts).encode()),
            ("agt-sender", sender.encode()),
            ("agt-signature", sign_record(key, nonce, ts, sender, value).encode())]


@pytest.fixture
def key_file(tmp_path: Path) -> Path:
    path = tmp_path / "inbound.key"
    path.write_text(base64.b64encode(KEY).decode() + "\n")
    return path


def signed_daemon(broker: KafkaBroker, topic: str, tmp_path: Path, key_file: Path,
                  sink: Any, started: list[RunningDaemon], **env: str) -> RunningDaemon:
    settings = kafka_settings(broker.bootstrap, topic, tmp_path,
                              GOVPIPE_SOURCE__REQUIRE_SIGNATURE="true",
                              GOVPIPE_SOURCE__INBOUND_KEY_FILE=str(key_file), **env)
    running = RunningDaemon(settings, [(sink, SinkSettings(enabled=True))])
    started.append(running)
    running.start()
    return running


def rejected(running: RunningDaemon, reason: str) -> float:
    return running.sample("govpipe_source_rejected_total", reason=reason)


def deadletters(tmp_path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for path in sorted((tmp_path / "deadletter").glob("*.jsonl"))
            for line in path.read_text().splitlines()]


async def test_good_replayed_expired_forged_and_unsigned_records(
        kafka_broker: KafkaBroker, kafka_topic: str, tmp_path: Path, key_file: Path,
        daemons: list[RunningDaemon]) -> None:
    good, forged_then_genuine, old, plain = numbered_events(4, "inb")
    good_headers = headers(good)
    genuine = headers(forged_then_genuine)
    forged = [(name, value) if name != "agt-signature" else
              (name, sign_record(bytes(32), genuine[0][1].decode(), int(genuine[1][1]),
                                 "agent-a", forged_then_genuine).encode())
              for name, value in genuine]
    stale = headers(old, ts=wall_clock_ms() - 301_000)
    values = [good, good, forged_then_genuine, forged_then_genuine, old, plain]
    await produce(kafka_broker.bootstrap, kafka_topic, values,
                  headers=[good_headers, good_headers, forged, genuine, stale, []])
    sink = MemorySink()
    running = signed_daemon(kafka_broker, kafka_topic, tmp_path, key_file, sink, daemons)
    await eventually(lambda: running.sample("govpipe_source_records_total") == 6, 60)
    await sink.wait_for_count(2)
    outcome = await running.stop()

    assert outcome.unsettled == 0
    assert sorted(event.id for event in sink.events) == ["inb-0000000", "inb-0000001"]
    assert [rejected(running, r) for r in ("replay", "bad_signature", "expired", "unsigned")
            ] == [1, 1, 1, 1]
    assert running.sample("govpipe_inbound_verification_total", result="ok") == 2
    entries = {entry["reason"]: entry for entry in deadletters(tmp_path)}
    assert set(entries) == {"replay", "bad_signature", "expired", "unsigned"}
    # Dead-letter entries keep the headers, so a rejected record can be examined or resent.
    assert "agt-signature" in json.dumps(entries["replay"])


async def test_a_full_nonce_store_fails_closed_and_keeps_earlier_nonces(
        kafka_broker: KafkaBroker, kafka_topic: str, tmp_path: Path, key_file: Path,
        daemons: list[RunningDaemon]) -> None:
    values = numbered_events(3, "cap")
    signed = [headers(value) for value in values]
    await produce(kafka_broker.bootstrap, kafka_topic, [*values, values[0]],
                  headers=[*signed, signed[0]])
    sink = MemorySink()
    running = signed_daemon(kafka_broker, kafka_topic, tmp_path, key_file, sink, daemons,
                            GOVPIPE_SOURCE__NONCE_CAPACITY="2",
                            GOVPIPE_SOURCE__NONCE_SENDER_SHARE="1")  # the true overflow
    await eventually(lambda: running.sample("govpipe_source_records_total") == 4, 60)
    await running.stop()

    assert sorted(event.id for event in sink.events) == ["cap-0000000", "cap-0000001"]
    assert rejected(running, "nonce_capacity") == 1
    assert rejected(running, "replay") == 1  # the first nonce was not evicted for room


async def test_a_restart_redelivering_uncommitted_records_does_not_call_them_replays(
        kafka_broker: KafkaBroker, kafka_topic: str, tmp_path: Path, key_file: Path,
        daemons: list[RunningDaemon]) -> None:
    values = numbered_events(5, "redeliver")
    await produce(kafka_broker.bootstrap, kafka_topic, values,
                  headers=[headers(value) for value in values])
    held = FlakySink("held")
    held.gate = asyncio.Event()  # never opened: nothing settles, nothing is committed
    env = {"GOVPIPE_SHUTDOWN__TIMEOUT_S": "0.5"}
    first = signed_daemon(kafka_broker, kafka_topic, tmp_path, key_file, held, daemons, **env)
    await eventually(lambda: first.sample("govpipe_events_accepted_total") == 5, 60)
    assert (await first.stop()).unsettled == 5

    sink = MemorySink()
    settings = first.settings  # same group id
    second = RunningDaemon(settings, [(sink, SinkSettings(enabled=True))])
    daemons.append(second)
    second.start()
    await asyncio.wait_for(sink.wait_for_count(5), 60)
    await second.stop()
    assert sorted(event.id for event in sink.events) == sorted(
        json.loads(value)["event_id"] for value in values)
    assert rejected(second, "replay") == 0


async def owned_partition(running: RunningDaemon) -> int:
    def one() -> bool:
        consumer = running.source._consumer
        return consumer is not None and len(consumer.assignment()) == 1
    await eventually(one, 60)
    consumer = running.source._consumer
    assert consumer is not None
    return int(next(iter(consumer.assignment())).partition)


async def test_two_replicas_catch_replays_per_partition_only(
        kafka_broker: KafkaBroker, tmp_path: Path, key_file: Path,
        daemons: list[RunningDaemon]) -> None:
    topic = f"inbound-replicas-{uuid.uuid4().hex[:8]}"
    await create_topics(kafka_broker.bootstrap, [topic], partitions=2)
    sinks = [MemorySink("a"), MemorySink("b")]
    first = signed_daemon(kafka_broker, topic, tmp_path / "a", key_file, sinks[0], daemons)
    group = {"GOVPIPE_SOURCE__GROUP_ID": first.settings.source.group_id}
    second = signed_daemon(kafka_broker, topic, tmp_path / "b", key_file, sinks[1], daemons,
                           **group)
    owners = {await owned_partition(first): first, await owned_partition(second): second}
    assert set(owners) == {0, 1}

    value = numbered_events(1, "twice")[0]
    signed = headers(value)
    producer = AIOKafkaProducer(bootstrap_servers=kafka_broker.bootstrap, acks="all")
    await producer.start()
    try:
        for partition in (0, 0, 1):  # the original, a replay on its partition, one across
            await producer.send_and_wait(topic, value, partition=partition, headers=signed)
    finally:
        await producer.stop()
    await eventually(lambda: sum(r.sample("govpipe_source_records_total")
                                 for r in (first, second)) == 3, 60)
    await eventually(lambda: len(sinks[0].events) + len(sinks[1].events) == 2, 30)

    # Caught on the same partition (same replica, same nonce store)...
    assert rejected(owners[0], "replay") == 1
    # ...but not across partitions: the other replica has its own store (README says so).
    assert rejected(owners[1], "replay") == 0
    assert owners[1].sample("govpipe_inbound_verification_total", result="ok") == 1


async def test_govpipe_publish_signs_what_govpipe_run_accepts(
        kafka_broker: KafkaBroker, kafka_topic: str, tmp_path: Path, key_file: Path) -> None:
    events = tmp_path / "events.jsonl"
    values = numbered_events(1_203, "cli")  # more than one chunk of records in flight
    events.write_bytes(b"\n".join(values[:700]) + b"\nnot json\n" + b"\n".join(values[700:]))
    publish = await asyncio.create_subprocess_exec(
        str(GOVPIPE), "publish", "--bootstrap-servers", kafka_broker.bootstrap, "--topic",
        kafka_topic, "--sign-key", str(key_file), "--sender", "cli-test", str(events),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    stdout, stderr = await asyncio.wait_for(publish.communicate(), 120)
    assert stdout.decode().strip() == "published 1203, failed 1"
    assert "line 701: not_json" in stderr.decode()
    assert publish.returncode == 1

    env = run_env(kafka_broker.bootstrap, kafka_topic, f"g-{uuid.uuid4().hex[:8]}", tmp_path)
    env.update({"GOVPIPE_SOURCE__REQUIRE_SIGNATURE": "true",
                "GOVPIPE_SOURCE__INBOUND_KEY_FILE": str(key_file)})
    process = await GovpipeProcess(env, tmp_path, "run").spawn()
    out = process.out
    try:
        await eventually(lambda: len(complete_lines(out)) >= 1_203, 90)
    finally:
        assert await process.terminate() == 0
    assert sorted(json.loads(line)["id"] for line in complete_lines(out)) == sorted(
        json.loads(value)["event_id"] for value in values)
    # Keyed by agent_id and sent as written: the bytes on the topic are the file's lines.
    records = await consume_all(kafka_broker.bootstrap, kafka_topic, 1_203)
    assert [record.value for record in records] == values
    assert all(record.key == json.loads(record.value)["agent_id"].encode()
               for record in records)


class FakeGovernanceEvent:
    """Stands in for an Agent OS GovernanceEvent: anything with to_dict()."""

    def __init__(self, payload: dict[str, Any]) -> None:
        self._payload = payload

    def to_dict(self) -> dict[str, Any]:
        return dict(self._payload)


async def test_the_agent_os_sink_publishes_signed_records(
        kafka_broker: KafkaBroker, kafka_topic: str, tmp_path: Path, key_file: Path,
        daemons: list[RunningDaemon]) -> None:
    payloads = [json.loads(value) for value in numbered_events(3, "agentos")]

    def emit() -> tuple[ExportResult, ExportResult, bool]:
        sink = AgentOsSink(kafka_broker.bootstrap, kafka_topic, sign_key=KEY, sender="kernel",
                           spool_dir=tmp_path / "spool")
        result = sink.emit([FakeGovernanceEvent(p) for p in payloads[:2]] + payloads[2:])
        closed = sink.shutdown(5000)
        return result, sink.emit(payloads), closed

    result, after_shutdown, closed = await asyncio.to_thread(emit)
    assert (result, after_shutdown, closed) == (ExportResult.SUCCESS, ExportResult.DROPPED,
                                                True)
    records = await consume_all(kafka_broker.bootstrap, kafka_topic, 3)
    assert [record.key for record in records] == [p["agent_id"].encode() for p in payloads]

    sink = MemorySink()
    running = signed_daemon(kafka_broker, kafka_topic, tmp_path, key_file, sink, daemons)
    await asyncio.wait_for(sink.wait_for_count(3), 60)
    await running.stop()
    assert running.sample("govpipe_inbound_verification_total", result="ok") == 3


async def test_govpipe_publish_shows_progress_on_a_terminal(
        kafka_broker: KafkaBroker, kafka_topic: str, tmp_path: Path) -> None:
    events = tmp_path / "events.jsonl"
    events.write_bytes(b"\n".join(numbered_events(600, "tty")) + b"\n")
    controller, terminal = os.openpty()
    try:
        process = await asyncio.create_subprocess_exec(
            str(GOVPIPE), "publish", "--bootstrap-servers", kafka_broker.bootstrap,
            "--topic", kafka_topic, str(events), stdout=asyncio.subprocess.PIPE,
            stderr=terminal)
        stdout, _ = await asyncio.wait_for(process.communicate(), 120)
        shown = os.read(controller, 65536).decode()
    finally:
        os.close(controller)
        os.close(terminal)
    assert (process.returncode, stdout.decode().strip()) == (0, "published 600, failed 0")
    assert "\rpublished 500, failed 0…" in shown


async def test_govpipe_publish_counts_every_line_as_failed_when_kafka_is_unreachable(
        tmp_path: Path) -> None:
    events = tmp_path / "events.jsonl"
    events.write_bytes(b"\n".join(numbered_events(3, "down")) + b"\n")
    with socket.socket() as closed:  # a free port nobody listens on
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    process = await asyncio.create_subprocess_exec(
        str(GOVPIPE), "publish", "--bootstrap-servers", f"127.0.0.1:{port}", "--topic", "t",
        str(events), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    stdout, stderr = await asyncio.wait_for(process.communicate(), 120)
    assert (process.returncode, stdout.decode().strip()) == (1, "published 0, failed 3")
    assert f"cannot publish: cannot reach Kafka at 127.0.0.1:{port}" in stderr.decode()
