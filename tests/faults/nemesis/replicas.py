"""The nemesis replicas: `govpipe run` in one consumer group, stdout through a pipe to a
reader process the nemesis can stop, named r0, r1, … in start order."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from dataclasses import dataclass
from pathlib import Path
from typing import Self

from tests.faults.nemesis.journal import Journal
from tests.support.processes import PipedGovpipe, run_env

# Small queues turn a stalled sink into a paused source within a second or two; a short
# revocation wait (shutdown.timeout_s) lets a rebalance hand partitions straight back to a
# replica that is still paused; short breaker cooldowns open and close breakers many times.
REPLICA_SETTINGS = {
    "GOVPIPE_SHUTDOWN__TIMEOUT_S": "5",
    "GOVPIPE_SOURCE__COMMIT_INTERVAL_S": "0.5",
    "GOVPIPE_SINKS__STDOUT__QUEUE_SIZE": "200",
    "GOVPIPE_SINKS__STDOUT__BATCH_SIZE": "100",
    "GOVPIPE_SINKS__STDOUT__BREAKER__COOLDOWN_S": "2",
    "GOVPIPE_SINKS__OTLP__ENABLED": "true",
    "GOVPIPE_SINKS__OTLP__QUEUE_SIZE": "200",
    "GOVPIPE_SINKS__OTLP__BATCH_SIZE": "100",
    "GOVPIPE_SINKS__OTLP__TIMEOUT_S": "2",
    "GOVPIPE_SINKS__OTLP__RETRY__MAX_ATTEMPTS": "3",
    "GOVPIPE_SINKS__OTLP__RETRY__INITIAL_BACKOFF_S": "0.1",
    "GOVPIPE_SINKS__OTLP__RETRY__MAX_BACKOFF_S": "1",
    "GOVPIPE_SINKS__OTLP__BREAKER__FAILURE_THRESHOLD": "3",
    "GOVPIPE_SINKS__OTLP__BREAKER__COOLDOWN_S": "2",
    "GOVPIPE_SINKS__OTLP__BREAKER__SUCCESS_THRESHOLD": "1",
}
# What the OTLP sink does while its breaker is open, alternating by replica: "block" holds
# events (a Collector outage then back-pressures the source), "deadletter" fails them fast.
MODES = ("block", "deadletter")


@dataclass(frozen=True, slots=True)
class Topology:
    """Where the replicas read, write and dead-letter."""

    bootstrap: str
    topic: str
    group: str
    dlq_topic: str
    dlq_dir: Path          # file dead-letters, one directory per replica
    collector_endpoint: str
    work_dir: Path


def replica_env(topology: Topology, name: str, mode: str) -> dict[str, str]:
    """Block-mode replicas dead-letter to Kafka (the default for a Kafka source), the others
    to files, where the dead-letter disk can be filled."""
    if mode == "block":
        deadletter = {"GOVPIPE_DEADLETTER__KIND": "kafka",
                      "GOVPIPE_DEADLETTER__TOPIC": topology.dlq_topic}
    else:
        deadletter = {"GOVPIPE_DEADLETTER__KIND": "file",
                      "GOVPIPE_DEADLETTER__PATH": str(topology.dlq_dir / name)}
    return run_env(topology.bootstrap, topology.topic, topology.group, topology.work_dir,
                   **REPLICA_SETTINGS, **deadletter,
                   GOVPIPE_SINKS__OTLP__ENDPOINT=topology.collector_endpoint,
                   GOVPIPE_SINKS__OTLP__ON_OPEN=mode,
                   # Pinned, not inherited: common in containers, and the stricter case for
                   # the stdout sink (an unbuffered stdout hands it short writes as they are).
                   PYTHONUNBUFFERED="1")


class Replica(PipedGovpipe):
    """A PipedGovpipe (stdout through a pipe to `cat`, which the nemesis can SIGSTOP to
    stall the stdout sink) with what the nemesis knows of it: its OTLP mode, whether it
    serves, is frozen or is on its way out, and its exit code."""

    def __init__(self, topology: Topology, name: str, mode: str) -> None:
        super().__init__(replica_env(topology, name, mode), topology.work_dir, name)
        self.name = name
        self.mode = mode
        self.started = False        # up and serving: only then a target for faults
        self.frozen = False         # govpipe SIGSTOPped: a scrape would hang
        self.leaving = False        # SIGTERMed or SIGKILLed by the nemesis
        self.exit_code: int | None = None

    async def start(self, timeout_s: float = 60) -> Self:
        await super().start(timeout_s)
        self.started = True
        return self

    @property
    def live(self) -> bool:
        """Started, running and not on its way out: a member of the group, and a target
        for faults (one still starting is not: a SIGKILL then fails its start)."""
        return self.started and self.running and not self.leaving

    @property
    def scrapable(self) -> bool:
        return self.running and not self.frozen and self.listen is not None

    def signal(self, signum: int) -> None:
        if self.proc is not None and self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signum)

    async def wait_exit(self, timeout_s: float) -> int | None:
        """The exit code, or None (after a SIGKILL) when it did not exit within the time."""
        assert self.proc is not None
        try:
            code = await asyncio.wait_for(self.proc.wait(), timeout_s)
        except TimeoutError:
            self.signal(signal.SIGKILL)
            self.exit_code = await self.proc.wait()
            return None
        self.exit_code = code
        return code

    async def reap(self) -> None:
        """For the end and for finally blocks: nothing of this replica left running (a
        frozen one is continued first, and the reader ends at EOF once govpipe is gone)."""
        self.signal(signal.SIGCONT)
        await self.ensure_stopped()

    def revocation_timeouts(self) -> int:
        """Revocations that gave partitions up with records unsettled (a stalled sink)."""
        return sum(1 for entry in self.log_entries()
                   if str(entry.get("message", "")).startswith("partitions revoked with"))


class Replicas:
    """Every replica started in the run (live or not), named r0, r1, … in start order."""

    def __init__(self, topology: Topology, journal: Journal) -> None:
        self.topology = topology
        self.journal = journal
        self.all: list[Replica] = []
        self.starting = 0

    def live(self) -> list[Replica]:
        return [r for r in self.all if r.live]

    async def start_one(self) -> Replica:
        number = len(self.all)
        replica = Replica(self.topology, f"r{number}", MODES[number % len(MODES)])
        self.all.append(replica)
        await replica.start()
        reader = None if replica.reader is None else replica.reader.pid
        self.journal.note(f"{replica.name} started (otlp on_open={replica.mode}, "
                          f"pid {replica.pid}, reader pid {reader})")
        return replica

    async def reap_all(self) -> None:
        await asyncio.gather(*(r.reap() for r in self.all))
