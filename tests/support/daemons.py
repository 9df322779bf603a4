"""An in-process Daemon on a real Kafka source, with the test's own sinks (often
`tests.support.fakes.MemorySink`), its metrics on a registry of its own."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Sequence
from pathlib import Path

from prometheus_client import CollectorRegistry

from pipeline.app import build_daemon
from pipeline.daemon import Outcome
from pipeline.deadletter.store import DeadLetterStore
from pipeline.settings import Settings, SinkSettings, load_settings
from pipeline.signing.signers import HmacSigner
from sinks.base import Sink
from tests.support.metrics import sample

KEY = bytes(range(32))


def kafka_settings(bootstrap: str, topic: str, tmp_path: Path, **env: str) -> Settings:
    """Settings for a daemon on `topic` in a fresh consumer group; `env` are GOVPIPE_* keys."""
    return load_settings(None, {
        "GOVPIPE_SOURCE__KIND": "kafka", "GOVPIPE_KAFKA__BOOTSTRAP_SERVERS": bootstrap,
        "GOVPIPE_SOURCE__TOPIC": topic, "GOVPIPE_SOURCE__GROUP_ID": f"g-{uuid.uuid4().hex[:8]}",
        "GOVPIPE_SOURCE__COMMIT_INTERVAL_S": "0.2", "GOVPIPE_SERVER__LISTEN": "127.0.0.1:0",
        "GOVPIPE_DEADLETTER__KIND": "file",
        "GOVPIPE_DEADLETTER__PATH": str(tmp_path / "deadletter"),
        "GOVPIPE_SHUTDOWN__TIMEOUT_S": "10", **env})


class RunningDaemon:
    """A Daemon task on a Kafka source; `stop` requests shutdown and returns its outcome."""

    def __init__(self, settings: Settings, sinks: Sequence[tuple[Sink, SinkSettings]],
                 deadletter: DeadLetterStore | None = None) -> None:
        self.settings = settings
        self.registry = CollectorRegistry()
        self.daemon = build_daemon(settings, {}, sinks=sinks, signer=HmacSigner(KEY),
                                   store=deadletter, registry=self.registry)
        self.source = self.daemon.source
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
        return sample(self.registry, name, **labels)
