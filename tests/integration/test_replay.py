"""`govpipe replay` end to end: from a dead-letter directory to stdout, and from a Kafka
dead-letter topic back onto the input topic, each entry once."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from datetime import UTC, datetime
from pathlib import Path

from pipeline.deadletter.entry import DeadLetterEntry
from pipeline.deadletter.file import FileDeadLetter
from pipeline.deadletter.kafka import KafkaDeadLetter
from pipeline.model import Position
from pipeline.settings import SinkSettings
from sinks.base import SinkError
from tests.support.daemons import RunningDaemon, kafka_settings
from tests.support.events import GARBAGE, mixed_input, numbered_events
from tests.support.fakes import MemorySink
from tests.support.infra.kafka import KafkaBroker
from tests.support.kafka_clients import create_topics, produce
from tests.support.processes import govpipe_env
from tests.support.waiting import eventually

GOVPIPE = Path(sys.executable).parent / "govpipe"


async def govpipe(*args: str, cwd: Path, env: dict[str, str],
                  stdin: bytes = b"") -> tuple[int, bytes, str]:
    proc = await asyncio.create_subprocess_exec(
        str(GOVPIPE), *args, cwd=cwd, env=env, stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(stdin), 120)
    assert proc.returncode is not None
    return proc.returncode, out, err.decode()


async def test_file_dead_letters_replay_to_stdout_once(tmp_path: Path) -> None:
    env = govpipe_env(bytes(range(32)))
    payload, _ = mixed_input()
    code, _, _ = await govpipe("run", cwd=tmp_path, env=env, stdin=payload)
    assert code == 0

    code, out, err = await govpipe("replay", "--reason", "invalid_json", cwd=tmp_path, env=env)
    assert code == 0
    invalid = [raw for raw, reason in GARBAGE if reason == "invalid_json"]
    assert sorted(out.splitlines()) == sorted(invalid)
    assert err.strip().startswith(f"replayed {len(invalid)}, already replayed 0")

    code, out, err = await govpipe("replay", cwd=tmp_path, env=env)
    assert sorted(out.splitlines()) == sorted(
        raw for raw, reason in GARBAGE if reason != "invalid_json")
    assert f"already replayed {len(invalid)}" in err

    code, out, err = await govpipe("replay", cwd=tmp_path, env=env)
    assert (code, out) == (0, b"")
    assert err.startswith(f"replayed 0, already replayed {len(GARBAGE)}")


async def test_kafka_dead_letters_go_back_on_the_input_topic_once(
        kafka_broker: KafkaBroker, tmp_path: Path, daemons: list[RunningDaemon]) -> None:
    topic, dlq = "replay-in", "replay-in.dlq"
    await create_topics(kafka_broker.bootstrap, [topic, dlq])
    values = numbered_events(60, "rp")
    await produce(kafka_broker.bootstrap, topic, values)
    settings = kafka_settings(kafka_broker.bootstrap, topic, tmp_path,
                              GOVPIPE_DEADLETTER__KIND="kafka", GOVPIPE_DEADLETTER__TOPIC=dlq)
    down = MemorySink("collector")
    down.fail_with = SinkError("collector down", retriable=False, reason="export_failed")
    brokers = {"bootstrap_servers": kafka_broker.bootstrap}
    first = RunningDaemon(settings, [(down, SinkSettings(enabled=True))],
                          deadletter=KafkaDeadLetter(brokers, dlq))
    daemons.append(first)
    first.start()
    await eventually(lambda: first.sample("govpipe_deadletter_written_total",
                                          origin="collector") == 60)
    assert (await first.stop()).exit_code == 0

    env = {k: v for k, v in os.environ.items() if not k.startswith("GOVPIPE_")}
    env.update({"GOVPIPE_SOURCE__KIND": "kafka",
                "GOVPIPE_KAFKA__BOOTSTRAP_SERVERS": kafka_broker.bootstrap,
                "GOVPIPE_SOURCE__TOPIC": topic, "GOVPIPE_DEADLETTER__TOPIC": dlq})
    code, _, err = await govpipe("replay", "--sink", "collector", cwd=tmp_path, env=env)
    assert code == 0, err
    assert err.startswith("replayed 60, already replayed 0")
    code, _, err = await govpipe("replay", cwd=tmp_path, env=env)
    assert err.startswith("replayed 0, already replayed 60")

    back = MemorySink("collector")  # the collector is back: the same group resumes
    second = RunningDaemon(settings, [(back, SinkSettings(enabled=True))],
                           deadletter=KafkaDeadLetter(brokers, dlq))
    daemons.append(second)
    second.start()
    await asyncio.wait_for(back.wait_for_count(60), 60)
    assert (await second.stop()).exit_code == 0
    expected = {json.loads(value)["event_id"] for value in values}
    assert {event.id for event in back.events} == expected


async def test_replay_reads_every_daily_file(tmp_path: Path) -> None:
    days = iter([datetime(2026, 1, 30, 12, tzinfo=UTC), datetime(2026, 1, 31, 12, tzinfo=UTC),
                 datetime(2026, 2, 1, 12, tzinfo=UTC)])
    day = next(days)
    store = FileDeadLetter(tmp_path / "deadletter", clock=lambda: day)
    values = [b'{"not": "an event", "day": %d}' % n for n in range(3)]
    for number, value in enumerate(values):
        await store.write([DeadLetterEntry(origin="source", reason="unknown_shape",
                                           error="x", position=Position("stdin", 0, number),
                                           value=value)])
        day = next(days, day)
    assert len(list(store.directory.glob("deadletter-*.jsonl"))) == 3
    code, out, err = await govpipe("replay", cwd=tmp_path, env=govpipe_env(bytes(range(32))))
    assert code == 0, err
    assert out.splitlines() == values
