"""Inbound authentication that holds across restarts, rebalances, backlogs and load, against
a real broker (issue 16): nonces rebuilt from the partition, freshness against the
broker's append time, per-sender shares, binary-mode headers under the signature, and a
dead-lettered signed event replayed once."""

from __future__ import annotations

import asyncio
import base64
import json
import uuid
from collections.abc import Sequence
from pathlib import Path

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.structs import OffsetAndMetadata

from pipeline.inbound.signed_string import signature_headers
from pipeline.inbound.verifier import wall_clock_ms
from pipeline.settings import SinkSettings
from sinks.base import Sink, SinkError
from tests.integration.test_inbound import owned_partition
from tests.support.daemons import KEY as DAEMON_KEY
from tests.support.daemons import RunningDaemon, kafka_settings
from tests.support.events import numbered_events
from tests.support.fakes import FlakySink, MemorySink
from tests.support.infra.kafka import KafkaBroker
from tests.support.kafka_clients import consume_all, create_topics, produce, produce_fast
from tests.support.processes import GOVPIPE, govpipe_env
from tests.support.waiting import eventually

KEY = bytes(range(100, 132))
Headers = list[tuple[str, bytes]]
LOG_APPEND_TIME = {"message.timestamp.type": "LogAppendTime"}


def signed(value: bytes, sender: str = "agent-a", extra: Sequence[tuple[str, bytes]] = ()
           ) -> Headers:
    return [*extra, *signature_headers(KEY, uuid.uuid4().hex, wall_clock_ms(), sender, value,
                                       extra)]


def key_file(tmp_path: Path) -> Path:
    path = tmp_path / "inbound.key"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(base64.b64encode(KEY).decode() + "\n")
    return path


def daemon(broker: KafkaBroker, topic: str, tmp_path: Path, sink: Sink,
           started: list[RunningDaemon], **env: str) -> RunningDaemon:
    settings = kafka_settings(broker.bootstrap, topic, tmp_path,
                              GOVPIPE_SOURCE__REQUIRE_SIGNATURE="true",
                              GOVPIPE_SOURCE__INBOUND_KEY_FILE=str(key_file(tmp_path)), **env)
    running = RunningDaemon(settings, [(sink, SinkSettings(enabled=True))])
    started.append(running)
    running.start()
    return running


def rejected(running: RunningDaemon, reason: str) -> float:
    return running.sample("govpipe_source_rejected_total", reason=reason)


def read(running: RunningDaemon) -> float:
    return running.sample("govpipe_source_records_total")


async def test_a_replay_after_a_restart_is_caught(
        kafka_broker: KafkaBroker, kafka_topic: str, tmp_path: Path,
        daemons: list[RunningDaemon]) -> None:
    values = numbered_events(3, "restart")
    headers = [signed(value) for value in values]
    await produce(kafka_broker.bootstrap, kafka_topic, values, headers=headers)
    sink = MemorySink()
    first = daemon(kafka_broker, kafka_topic, tmp_path, sink, daemons)
    await asyncio.wait_for(sink.wait_for_count(3), 60)
    assert (await first.stop()).unsettled == 0  # committed: nothing is read again

    await produce(kafka_broker.bootstrap, kafka_topic, [values[1]], headers=[headers[1]])
    again = MemorySink("again")
    second = RunningDaemon(first.settings, [(again, SinkSettings(enabled=True))])
    daemons.append(second)
    second.start()
    await eventually(lambda: read(second) == 1, 60)
    await second.stop()
    assert rejected(second, "replay") == 1  # a new process, its nonces rebuilt from Kafka
    assert again.events == []


async def test_a_replay_after_a_rebalance_is_caught_by_the_new_owner(
        kafka_broker: KafkaBroker, tmp_path: Path, daemons: list[RunningDaemon]) -> None:
    topic = f"inbound-rebalance-{uuid.uuid4().hex[:8]}"
    await create_topics(kafka_broker.bootstrap, [topic], partitions=2)
    originals = numbered_events(2, "moved")
    headers = [signed(value) for value in originals]
    producer = AIOKafkaProducer(bootstrap_servers=kafka_broker.bootstrap, acks="all")
    await producer.start()
    try:
        for partition in (0, 1):
            await producer.send_and_wait(topic, originals[partition], partition=partition,
                                         headers=headers[partition])
        sinks = [MemorySink("a"), MemorySink("b")]
        first = daemon(kafka_broker, topic, tmp_path / "a", sinks[0], daemons)
        await asyncio.wait_for(sinks[0].wait_for_count(2), 60)
        group = {"GOVPIPE_SOURCE__GROUP_ID": first.settings.source.group_id}
        second = daemon(kafka_broker, topic, tmp_path / "b", sinks[1], daemons, **group)
        # One partition moved to the second replica, which never saw its original.
        moved = await owned_partition(second)
        await owned_partition(first)
        for partition in (0, 1):  # a copy of each original onto its own partition
            await producer.send_and_wait(topic, originals[partition], partition=partition,
                                         headers=headers[partition])
    finally:
        await producer.stop()
    await eventually(lambda: rejected(first, "replay") + rejected(second, "replay") == 2, 60)
    assert rejected(second, "replay") == 1, f"partition {moved}"
    assert sinks[1].events == []


async def test_log_append_time_delivers_a_backlog_older_than_the_window_and_refuses_a_late_copy(
        kafka_broker: KafkaBroker, tmp_path: Path, daemons: list[RunningDaemon]) -> None:
    appended, created = (f"inbound-lat-{uuid.uuid4().hex[:8]}",
                         f"inbound-ct-{uuid.uuid4().hex[:8]}")
    await create_topics(kafka_broker.bootstrap, [appended], configs=LOG_APPEND_TIME)
    await create_topics(kafka_broker.bootstrap, [created])
    values = numbered_events(20, "backlog")
    headers = [signed(value) for value in values]
    for topic in (appended, created):
        await produce(kafka_broker.bootstrap, topic, values, headers=headers)
    await asyncio.sleep(2.5)  # the backlog ages past a 2 s window before anyone reads it
    await produce(kafka_broker.bootstrap, appended, [values[0]], headers=[headers[0]])
    window = {"GOVPIPE_SOURCE__REPLAY_WINDOW_S": "2"}
    sink, control = MemorySink("lat"), MemorySink("ct")
    lat = daemon(kafka_broker, appended, tmp_path / "lat", sink, daemons, **window)
    ct = daemon(kafka_broker, created, tmp_path / "ct", control, daemons, **window)
    await eventually(lambda: read(lat) == 21 and read(ct) == 20, 60)
    await asyncio.wait_for(sink.wait_for_count(20), 30)
    # Judged by when the broker appended them: all delivered; the copy appended later is
    # past the window by the broker's clock.
    assert sorted(e.id for e in sink.events) == sorted(
        json.loads(v)["event_id"] for v in values)
    assert rejected(lat, "expired") == 1
    # The same backlog on a CreateTime topic is judged by the reader's clock: all expired.
    assert rejected(ct, "expired") == 20


async def test_default_capacity_takes_a_burst_of_signed_records_with_none_rejected(
        kafka_broker: KafkaBroker, tmp_path: Path, daemons: list[RunningDaemon]) -> None:
    """The CI-sized stand-in for 5,000 signed records/s for 60 s (bench/inbound_rate.py
    measures that rate; this machine's CI shares two cores)."""
    topic = f"inbound-load-{uuid.uuid4().hex[:8]}"
    await create_topics(kafka_broker.bootstrap, [topic], partitions=4)
    count = 20_000
    values = numbered_events(count, "load")
    await produce_fast(kafka_broker.bootstrap, topic, values,
                       headers=[signed(v, f"agent-{i % 7}") for i, v in enumerate(values)])
    sink = MemorySink()
    running = daemon(kafka_broker, topic, tmp_path, sink, daemons)
    await eventually(lambda: read(running) == count, 240)
    await asyncio.wait_for(sink.wait_for_count(count), 60)
    await running.stop()
    assert running.sample("govpipe_inbound_verification_total", result="ok") == count
    assert running.sample("govpipe_events_accepted_total") == count


async def test_a_flood_from_one_sender_leaves_the_others_their_room(
        kafka_broker: KafkaBroker, kafka_topic: str, tmp_path: Path,
        daemons: list[RunningDaemon]) -> None:
    flood = numbered_events(150, "flood")
    others = numbered_events(30, "other")
    await produce_fast(kafka_broker.bootstrap, kafka_topic, [*flood, *others], headers=[
        *(signed(v, "flooder") for v in flood),
        *(signed(v, f"agent-{i % 3}") for i, v in enumerate(others))])
    sink = MemorySink()
    running = daemon(kafka_broker, kafka_topic, tmp_path, sink, daemons,
                     GOVPIPE_SOURCE__NONCE_CAPACITY="100",
                     GOVPIPE_SOURCE__NONCE_SENDER_SHARE="0.5")
    await eventually(lambda: read(running) == 180, 60)
    await asyncio.wait_for(sink.wait_for_count(80), 30)
    await running.stop()
    assert rejected(running, "sender_capacity") == 100
    assert rejected(running, "nonce_capacity") == 0
    assert {e.id for e in sink.events} >= {json.loads(v)["event_id"] for v in others}


async def test_binary_mode_headers_are_signed_and_a_tampered_one_is_refused(
        kafka_broker: KafkaBroker, kafka_topic: str, tmp_path: Path,
        daemons: list[RunningDaemon]) -> None:
    data = b'{"action":"read","decision":"allow"}'
    ce = [("ce_specversion", b"1.0"), ("ce_id", b"bin-1"), ("ce_source", b"/agents/a"),
          ("ce_type", b"ai.agentos.policy.check"), ("content-type", b"application/json")]
    genuine = signed(data, extra=ce)
    tampered = [(n, b"ai.agentos.identity.verified") if n == "ce_type" else (n, v)
                for n, v in signed(data, extra=ce)]
    value_only = [*[(n, v) if n != "ce_id" else (n, b"bin-2") for n, v in ce],
                  *signature_headers(KEY, uuid.uuid4().hex, wall_clock_ms(), "agent-a", data)]
    await produce(kafka_broker.bootstrap, kafka_topic, [data] * 3,
                  headers=[genuine, tampered, value_only])
    sink = MemorySink()
    running = daemon(kafka_broker, kafka_topic, tmp_path, sink, daemons)
    await eventually(lambda: read(running) == 3, 60)
    await asyncio.wait_for(sink.wait_for_count(1), 30)
    await running.stop()
    assert rejected(running, "bad_signature") == 2
    [event] = sink.events
    assert (event.id, event.attributes["type"]) == ("bin-1", "ai.agentos.policy.check")


async def replay(env: dict[str, str], cwd: Path, *args: str) -> str:
    process = await asyncio.create_subprocess_exec(
        str(GOVPIPE), "replay", *args, cwd=cwd, env=env, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE)
    _, err = await asyncio.wait_for(process.communicate(), 120)
    assert process.returncode == 0, err.decode()
    return err.decode()


async def test_a_dead_lettered_signed_event_replayed_is_accepted_once(
        kafka_broker: KafkaBroker, kafka_topic: str, tmp_path: Path,
        daemons: list[RunningDaemon]) -> None:
    value = numbered_events(1, "dl")[0]
    await produce(kafka_broker.bootstrap, kafka_topic, [value], headers=[signed(value)])
    refusing = FlakySink("collector", failures=1,
                         error=SinkError("refused", retriable=False, reason="rejected"))
    first = daemon(kafka_broker, kafka_topic, tmp_path, refusing, daemons)
    await eventually(lambda: first.sample("govpipe_deadletter_written_total",
                                          origin="collector") == 1, 60)
    await first.stop()

    env = govpipe_env(DAEMON_KEY, **{
        "GOVPIPE_SOURCE__KIND": "kafka", "GOVPIPE_KAFKA__BOOTSTRAP_SERVERS":
        kafka_broker.bootstrap, "GOVPIPE_SOURCE__TOPIC": kafka_topic,
        "GOVPIPE_SOURCE__REQUIRE_SIGNATURE": "true",
        "GOVPIPE_SOURCE__INBOUND_KEY_FILE": str(key_file(tmp_path)),
        "GOVPIPE_DEADLETTER__KIND": "file",
        "GOVPIPE_DEADLETTER__PATH": str(tmp_path / "deadletter")})
    assert "replayed 1," in await replay(env, tmp_path)
    assert "replayed 1," in await replay(env, tmp_path, "--again")  # a second copy
    records = await consume_all(kafka_broker.bootstrap, kafka_topic, 3)
    copy = records[-1]
    await produce(kafka_broker.bootstrap, kafka_topic, [copy.value],  # and a third
                  headers=[list(copy.headers)])

    sink = MemorySink()
    second = RunningDaemon(first.settings, [(sink, SinkSettings(enabled=True))])
    daemons.append(second)
    second.start()
    await eventually(lambda: read(second) == 3, 60)
    await second.stop()
    assert [event.id for event in sink.events] == [json.loads(value)["event_id"]]
    assert rejected(second, "replay") == 2
    assert rejected(second, "unsigned") == 0


async def test_a_backlog_copy_is_caught_after_a_restart_long_after_on_log_append_time(
        kafka_broker: KafkaBroker, tmp_path: Path, daemons: list[RunningDaemon]) -> None:
    """The original was read and committed, its copy appended right after waits unread;
    govpipe comes back more than two windows later. The rebuild looks back from the
    original's append time, not from now, so the copy (fresh by the broker's clock) is
    still caught."""
    topic = f"inbound-lat-restart-{uuid.uuid4().hex[:8]}"
    await create_topics(kafka_broker.bootstrap, [topic], configs=LOG_APPEND_TIME)
    value = numbered_events(1, "lat-restart")[0]
    headers = signed(value)
    await produce(kafka_broker.bootstrap, topic, [value, value], headers=[headers, headers])
    settings = kafka_settings(kafka_broker.bootstrap, topic, tmp_path)
    committer = AIOKafkaConsumer(bootstrap_servers=kafka_broker.bootstrap,
                                 group_id=settings.source.group_id, enable_auto_commit=False)
    await committer.start()
    try:  # as if govpipe had settled the original (offset 0) and stopped there
        committer.assign([TopicPartition(topic, 0)])
        await committer.commit({TopicPartition(topic, 0): OffsetAndMetadata(1, "")})
    finally:
        await committer.stop()
    await asyncio.sleep(2.5)  # more than two 1 s windows
    sink = MemorySink()
    running = daemon(kafka_broker, topic, tmp_path, sink, daemons,
                     GOVPIPE_SOURCE__GROUP_ID=settings.source.group_id,
                     GOVPIPE_SOURCE__REPLAY_WINDOW_S="1")
    await eventually(lambda: read(running) == 1, 60)
    await running.stop()
    assert rejected(running, "replay") == 1
    assert sink.events == []
