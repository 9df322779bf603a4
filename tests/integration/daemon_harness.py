"""An in-process daemon on a real Kafka source, with memory sinks, for integration tests."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import sys
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient
from prometheus_client import CollectorRegistry

from pipeline.daemon import Daemon, Outcome
from pipeline.deadletter.stores import DeadLetterDestination, FileDeadLetter
from pipeline.ops.metrics import Metrics
from pipeline.settings import Settings, SinkSettings, load_settings
from pipeline.signing.signers import HmacSigner
from pipeline.sources.kafka import KafkaSource
from pipeline.sources.offsets import OffsetTracker
from sinks.base import Sink

KEY = bytes(range(32))
GOVPIPE = Path(sys.executable).parent / "govpipe"


def run_env(bootstrap: str, topic: str, group: str, tmp_path: Path,
            **overrides: str) -> dict[str, str]:
    """The environment of a `govpipe run` child on a Kafka source; overrides are GOVPIPE_*
    keys. Nothing of the caller's GOVPIPE_* environment leaks in."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GOVPIPE_")}
    env.update({
        "GOVPIPE_SIGNING_KEY": base64.b64encode(KEY).decode(),
        "GOVPIPE_SOURCE__KIND": "kafka", "GOVPIPE_SOURCE__BOOTSTRAP_SERVERS": bootstrap,
        "GOVPIPE_SOURCE__TOPIC": topic, "GOVPIPE_SOURCE__GROUP_ID": group,
        "GOVPIPE_SOURCE__COMMIT_INTERVAL_S": "0.5", "GOVPIPE_SERVER__LISTEN": "127.0.0.1:0",
        "GOVPIPE_DEADLETTER__KIND": "file", "GOVPIPE_DEADLETTER__PATH": str(tmp_path / "dlq"),
    })
    env.update(overrides)
    return env


def complete_lines(path: Path) -> list[bytes]:
    """Whole lines only: a SIGKILL can cut the last write short."""
    data = path.read_bytes()
    return data[: data.rfind(b"\n") + 1].splitlines()
EXAMPLES = Path(__file__).parents[2] / "examples" / "events.jsonl"


def kafka_settings(bootstrap: str, topic: str, tmp_path: Path, **env: str) -> Settings:
    return load_settings(None, {
        "GOVPIPE_SOURCE__KIND": "kafka", "GOVPIPE_SOURCE__BOOTSTRAP_SERVERS": bootstrap,
        "GOVPIPE_SOURCE__TOPIC": topic, "GOVPIPE_SOURCE__GROUP_ID": f"g-{uuid.uuid4().hex[:8]}",
        "GOVPIPE_SOURCE__COMMIT_INTERVAL_S": "0.2", "GOVPIPE_SERVER__LISTEN": "127.0.0.1:0",
        "GOVPIPE_DEADLETTER__KIND": "file",
        "GOVPIPE_DEADLETTER__PATH": str(tmp_path / "deadletter"),
        "GOVPIPE_SHUTDOWN__TIMEOUT_S": "10", **env})


def numbered_events(count: int, prefix: str = "ev") -> list[bytes]:
    """`count` distinct Agent OS events, cycling through the shipped examples."""
    templates = [json.loads(line) for line in EXAMPLES.read_text(encoding="utf-8").splitlines()]
    events = []
    for number in range(count):
        event: dict[str, Any] = dict(templates[number % len(templates)])
        event["event_id"] = f"{prefix}-{number:07d}"
        events.append(json.dumps(event).encode())
    return events


class RunningDaemon:
    """A Daemon task on a Kafka source; `stop` requests shutdown and returns its outcome."""

    def __init__(self, settings: Settings, sinks: Sequence[tuple[Sink, SinkSettings]],
                 deadletter: DeadLetterDestination | None = None) -> None:
        self.settings = settings
        self.metrics = Metrics(CollectorRegistry())
        self.tracker = OffsetTracker()
        self.source = KafkaSource(settings.source, self.tracker, self.metrics,
                                  revoke_timeout_s=5)
        self.daemon = Daemon(settings, source=self.source, sinks=sinks,
                             signer=HmacSigner(KEY),
                             deadletter=deadletter or FileDeadLetter(settings.deadletter.path),
                             metrics=self.metrics, tracker=self.tracker)
        self.task: asyncio.Task[Outcome] | None = None

    def start(self) -> None:
        self.task = asyncio.create_task(self.daemon.run())

    async def __aenter__(self) -> RunningDaemon:
        self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        # A failed test must not leave a consumer in the group or a task on the loop.
        if self.task is not None and not self.task.done():
            self.daemon.request_stop()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.task, 30)

    async def stop(self) -> Outcome:
        assert self.task is not None
        self.daemon.request_stop()
        return await asyncio.wait_for(self.task, 60)

    def sample(self, name: str, **labels: str) -> float:
        return self.metrics.registry.get_sample_value(name, labels or None) or 0.0


async def committed_offsets(bootstrap: str, group_id: str) -> dict[int, int]:
    """The group's committed offset per partition, as the broker has it."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        offsets = await admin.list_consumer_group_offsets(group_id)
    finally:
        await admin.close()
    return {tp.partition: meta.offset for tp, meta in offsets.items()}
