"""`govpipe run` on a real Kafka source, as operators run it: SIGKILL mid-stream then a
restart loses nothing and repeats events byte for byte; SIGTERM drains and commits."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import signal
import sys
import uuid
from collections import defaultdict
from pathlib import Path

from tests.infra.kafka import KafkaBroker, create_topics, produce
from tests.integration.daemon_harness import KEY, committed_offsets, numbered_events
from tests.waiting import eventually

GOVPIPE = Path(sys.executable).parent / "govpipe"


def run_env(bootstrap: str, topic: str, group: str, tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GOVPIPE_")}
    env.update({
        "GOVPIPE_SIGNING_KEY": base64.b64encode(KEY).decode(),
        "GOVPIPE_SOURCE__KIND": "kafka", "GOVPIPE_SOURCE__BOOTSTRAP_SERVERS": bootstrap,
        "GOVPIPE_SOURCE__TOPIC": topic, "GOVPIPE_SOURCE__GROUP_ID": group,
        "GOVPIPE_SOURCE__COMMIT_INTERVAL_S": "0.5", "GOVPIPE_SERVER__LISTEN": "127.0.0.1:0",
        "GOVPIPE_DEADLETTER__KIND": "file", "GOVPIPE_DEADLETTER__PATH": str(tmp_path / "dlq"),
        "GOVPIPE_SINKS__STDOUT__BATCH_SIZE": "100",
    })
    return env


async def start(env: dict[str, str], out: Path, tmp_path: Path) -> asyncio.subprocess.Process:
    with out.open("wb") as stdout, (tmp_path / f"{out.stem}.log").open("wb") as stderr:
        return await asyncio.create_subprocess_exec(
            str(GOVPIPE), "run", cwd=tmp_path, env=env, stdin=asyncio.subprocess.DEVNULL,
            stdout=stdout, stderr=stderr)


def complete_lines(path: Path) -> list[bytes]:
    """Whole lines only: a SIGKILL can cut the last write short."""
    data = path.read_bytes()
    return data[: data.rfind(b"\n") + 1].splitlines()


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
    env = run_env(kafka_broker.bootstrap, topic, group, tmp_path)

    first = await start(env, tmp_path / "run1.jsonl", tmp_path)
    await wait_for_lines(tmp_path / "run1.jsonl", 3_000)
    first.send_signal(signal.SIGKILL)
    assert await first.wait() == -signal.SIGKILL

    second = await start(env, tmp_path / "run2.jsonl", tmp_path)
    expected = {json.loads(value)["event_id"] for value in values}
    outputs = (tmp_path / "run1.jsonl", tmp_path / "run2.jsonl")
    await eventually(lambda: ids_in(*outputs) >= expected, 120, interval_s=0.2)
    second.send_signal(signal.SIGTERM)
    assert await asyncio.wait_for(second.wait(), 60) == 0

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
    env = run_env(kafka_broker.bootstrap, topic, group, tmp_path)
    proc = await start(env, tmp_path / "out.jsonl", tmp_path)
    await wait_for_lines(tmp_path / "out.jsonl", 2_000)
    proc.send_signal(signal.SIGTERM)
    assert await asyncio.wait_for(proc.wait(), 60) == 0
    assert len(complete_lines(tmp_path / "out.jsonl")) == 2_000
    assert await committed_offsets(kafka_broker.bootstrap, group) == {0: 2_000}
    log = [json.loads(line) for line in (tmp_path / "out.log").read_text().splitlines()]
    assert log[-1]["message"] == "govpipe stopped"
    assert log[-1]["unsettled"] == 0
