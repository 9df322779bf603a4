"""`govpipe run` on a real Kafka source, as operators run it: SIGKILL mid-stream then a
restart loses nothing and repeats events byte for byte; SIGTERM drains and commits."""

from __future__ import annotations

import json
import uuid
from collections import defaultdict
from pathlib import Path

from tests.support.events import numbered_events
from tests.support.infra.kafka import KafkaBroker
from tests.support.kafka_clients import committed_offsets, create_topics, produce
from tests.support.processes import GovpipeProcess, complete_lines, run_env
from tests.support.waiting import eventually


async def wait_for_lines(path: Path, count: int, timeout_s: float = 90) -> None:
    await eventually(lambda: len(complete_lines(path)) >= count, timeout_s)


def ids_in(*paths: Path) -> set[str]:
    return {json.loads(line)["id"] for path in paths for line in complete_lines(path)}


async def test_sigkill_then_restart_loses_nothing_and_repeats_byte_identically(
        kafka_broker: KafkaBroker, tmp_path: Path) -> None:
    topic, group = "crash-kill", f"g-{uuid.uuid4().hex[:8]}"
    await create_topics(kafka_broker.bootstrap, [topic], partitions=2)
    values = numbered_events(20_000, "kill")
    await produce(kafka_broker.bootstrap, topic, values)
    env = run_env(kafka_broker.bootstrap, topic, group, tmp_path,
                  GOVPIPE_SINKS__STDOUT__BATCH_SIZE="100")

    first = await GovpipeProcess(env, tmp_path, "run1").spawn()
    await wait_for_lines(tmp_path / "run1.jsonl", 3_000)
    await first.kill()

    second = await GovpipeProcess(env, tmp_path, "run2").spawn()
    expected = {json.loads(value)["event_id"] for value in values}
    outputs = (tmp_path / "run1.jsonl", tmp_path / "run2.jsonl")
    await eventually(lambda: ids_in(*outputs) >= expected, 120, interval_s=0.2)
    assert await second.terminate() == 0

    copies: dict[str, set[bytes]] = defaultdict(set)
    for line in complete_lines(tmp_path / "run1.jsonl") + complete_lines(
            tmp_path / "run2.jsonl"):
        copies[json.loads(line)["id"]].add(line)
    assert set(copies) == expected
    assert all(len(versions) == 1 for versions in copies.values())  # duplicates identical
    offsets = await committed_offsets(kafka_broker.bootstrap, group)
    assert sum(offsets.values()) == 20_000


async def test_sigterm_drains_commits_and_exits_zero(kafka_broker: KafkaBroker,
                                                     tmp_path: Path) -> None:
    topic, group = "crash-term", f"g-{uuid.uuid4().hex[:8]}"
    await create_topics(kafka_broker.bootstrap, [topic])
    await produce(kafka_broker.bootstrap, topic, numbered_events(2_000, "term"))
    env = run_env(kafka_broker.bootstrap, topic, group, tmp_path,
                  GOVPIPE_SINKS__STDOUT__BATCH_SIZE="100")
    proc = await GovpipeProcess(env, tmp_path, "out").spawn()
    await wait_for_lines(tmp_path / "out.jsonl", 2_000)
    assert await proc.terminate() == 0
    assert len(complete_lines(tmp_path / "out.jsonl")) == 2_000
    assert await committed_offsets(kafka_broker.bootstrap, group) == {0: 2_000}
    log = [json.loads(line) for line in (tmp_path / "out.log").read_text().splitlines()]
    assert log[-1]["message"] == "govpipe stopped"
    assert log[-1]["unsettled"] == 0
