"""The machinery of the nemesis test (test_nemesis.py): `govpipe run` replicas whose stdout
goes through a pipe to a reader process the test can stop, a producer that outlives broker
outages, a seeded scheduler of overlapping faults, watchers of /metrics and of the group's
committed offsets, and the oracle that accounts for every input id at the end.

Single-fault tests miss losses that need two faults at once (a stalled sink *and* a
rebalance); here faults overlap at random, and the oracle only asks where every id went.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import itertools
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError
from aiokafka.structs import TopicPartition

from tests.support.events import event_value, strict_json
from tests.support.identities import identity_gaps
from tests.support.infra.collector import Collector
from tests.support.infra.kafka import KafkaBroker
from tests.support.kafka_clients import consume_to_end
from tests.support.metrics import metric_value
from tests.support.processes import GovpipeProcess, run_env
from tests.support.waiting import eventually

PREFIX = "nem"
MAX_REPLICAS = 3
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
KAFKA_TIMEOUT_S = 5.0


def event_id(number: int) -> str:
    return f"{PREFIX}-{number:08d}"


# --------------------------------------------------------------------------- journal


class Journal:
    """Every action with its time since the start, printed as it happens: a failed run
    can be read back, and replayed with its seed."""

    def __init__(self) -> None:
        self.started = time.monotonic()
        self.lines: list[str] = []

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def note(self, message: str) -> None:
        line = f"[nemesis {self.elapsed():7.1f}s] {message}"
        self.lines.append(line)
        print(line, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- replicas


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


def _signal(proc: asyncio.subprocess.Process | None, signum: int) -> None:
    if proc is not None and proc.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signum)


class Replica(GovpipeProcess):
    """`govpipe run` whose stdout is a pipe read by `cat` into `<name>.jsonl`. Stopping `cat`
    (SIGSTOP) stalls the stdout sink the way a stuck reader of a pipe does: the pipe fills,
    the write blocks, the sink's queue fills, the source pauses."""

    def __init__(self, topology: Topology, name: str, mode: str) -> None:
        super().__init__(replica_env(topology, name, mode), topology.work_dir, name)
        self.name = name
        self.mode = mode
        self.reader: asyncio.subprocess.Process | None = None
        self.started = False        # up and serving: only then a target for faults
        self.frozen = False         # govpipe SIGSTOPped: a scrape would hang
        self.leaving = False        # SIGTERMed or SIGKILLed by the nemesis
        self.exit_code: int | None = None

    async def start(self, timeout_s: float = 60) -> Replica:
        cat = shutil.which("cat")
        assert cat is not None, "`cat` is needed as the stdout reader"
        read_end, write_end = os.pipe()  # not inheritable: only the two ends' owners hold them
        try:
            with self.out.open("ab") as out:
                self.reader = await asyncio.create_subprocess_exec(
                    cat, stdin=read_end, stdout=out, stderr=asyncio.subprocess.DEVNULL)
            with self.log.open("ab") as stderr:
                self.proc = await asyncio.create_subprocess_exec(
                    *self.argv, cwd=self.cwd, env=self.env, stdin=asyncio.subprocess.DEVNULL,
                    stdout=write_end, stderr=stderr)
        finally:
            os.close(read_end)
            os.close(write_end)
        await eventually(self._found_listen, timeout_s, interval_s=0.1)
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
        _signal(self.proc, signum)

    def signal_reader(self, signum: int) -> None:
        _signal(self.reader, signum)

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
        """For the end and for finally blocks: nothing of this replica left running."""
        for proc in (self.proc, self.reader):
            _signal(proc, signal.SIGCONT)
        if self.running:
            self.signal(signal.SIGKILL)
            assert self.proc is not None
            await self.proc.wait()
        if self.reader is not None:
            try:  # the reader ends at EOF once govpipe is gone
                await asyncio.wait_for(self.reader.wait(), 30)
            except TimeoutError:
                _signal(self.reader, signal.SIGKILL)
                await self.reader.wait()

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
        self.journal.note(f"{replica.name} started (otlp on_open={replica.mode}, "
                          f"pid {replica.pid}, reader pid {_pid(replica.reader)})")
        return replica

    async def reap_all(self) -> None:
        await asyncio.gather(*(r.reap() for r in self.all))


def _pid(proc: asyncio.subprocess.Process | None) -> int | None:
    return None if proc is None else proc.pid


# --------------------------------------------------------------------------- producer


class SteadyProducer:
    """Produces `count` numbered events at about `per_second`, and keeps going through
    broker pauses and restarts: a chunk that is not acknowledged is sent again (a copy may
    land twice; at-least-once is all the oracle asks), on a fresh client."""

    CHUNK = 25

    def __init__(self, bootstrap: str, topic: str, count: int, per_second: float,
                 journal: Journal) -> None:
        self._bootstrap = bootstrap
        self._topic = topic
        self.count = count
        self._per_second = per_second
        self._journal = journal
        self.acked: set[int] = set()
        self.resent = 0

    async def run(self) -> None:
        producer = await self._new_producer()
        try:
            started, sent = time.monotonic(), 0
            retry: list[int] = []
            while sent < self.count or retry:
                fresh = list(range(sent, min(self.count, sent + self.CHUNK)))
                sent += len(fresh)
                retry = await self._send(producer, retry + fresh)
                if retry:
                    self.resent += len(retry)
                    await _stop_quietly(producer)
                    await asyncio.sleep(1)
                    producer = await self._new_producer()
                await asyncio.sleep(max(0.0, started + sent / self._per_second
                                        - time.monotonic()))
            self._journal.note(f"producer done: {len(self.acked)} acknowledged, "
                               f"{self.resent} sent again")
        finally:
            await _stop_quietly(producer)

    async def _new_producer(self) -> AIOKafkaProducer:
        for attempt in itertools.count(1):
            # A short request timeout: stopping a client with requests in flight waits for
            # them, and aiokafka spins on metadata requests meanwhile.
            producer = AIOKafkaProducer(bootstrap_servers=self._bootstrap, acks="all",
                                        linger_ms=5, request_timeout_ms=3_000)
            try:
                async with asyncio.timeout(15):
                    await producer.start()
            except (KafkaError, TimeoutError, OSError) as exc:
                if attempt == 1:
                    self._journal.note(f"producer cannot start ({exc!r}); retrying")
                await _stop_quietly(producer)
                await asyncio.sleep(1)
                continue
            if attempt > 1:
                self._journal.note(f"producer started again (attempt {attempt})")
            return producer
        raise AssertionError("unreachable")

    async def _send(self, producer: AIOKafkaProducer, numbers: Sequence[int]) -> list[int]:
        """Send and wait for acknowledgements; the numbers not acknowledged. The wait is
        short: a client whose broker went away with requests in flight retries its metadata
        in a tight loop (thousands a second) until stopped; this one is replaced instead."""
        futures: list[tuple[int, asyncio.Future[Any]]] = []
        try:
            async with asyncio.timeout(5):
                for number in numbers:
                    futures.append((number, await producer.send(
                        self._topic, event_value(number, PREFIX))))
                results = await asyncio.gather(*(f for _, f in futures),
                                               return_exceptions=True)
        except (KafkaError, TimeoutError, OSError):
            results = [f.result() if f.done() and not f.cancelled() and f.exception() is None
                       else KafkaError() for _, f in futures]
        acked = {n for (n, _), r in zip(futures, results, strict=True)
                 if not isinstance(r, BaseException)}
        self.acked |= acked
        return [n for n in numbers if n not in acked]


async def _stop_quietly(client: AIOKafkaProducer | AIOKafkaConsumer | AIOKafkaAdminClient
                        ) -> None:
    # A client of a stopped broker may take long to stop, or fail to: it is being replaced.
    with contextlib.suppress(KafkaError, TimeoutError, OSError):
        async with asyncio.timeout(15):
            if isinstance(client, AIOKafkaAdminClient):
                await client.close()
            else:
                await client.stop()


# --------------------------------------------------------------------------- watchers


@dataclass(slots=True)
class ScrapeLog:
    """What the scraper saw: how many scrapes, and each one whose identities did not hold."""

    scrapes: int = 0
    unreachable: int = 0
    violations: list[str] = field(default_factory=list)
    last: dict[str, str] = field(default_factory=dict)  # replica name → last scrape text


async def scrape(replica: Replica, timeout_s: float = 3.0) -> str | None:
    """/metrics, or None when it cannot be had now (stopping, frozen meanwhile, killed)."""
    try:
        async with aiohttp.ClientSession() as session, session.get(
                f"http://{replica.listen}/metrics",
                timeout=aiohttp.ClientTimeout(timeout_s)) as response:
            if response.status != 200:
                return None
            return await response.text()
    except (aiohttp.ClientError, TimeoutError, OSError):
        return None


async def scrape_periodically(replicas: Replicas, log: ScrapeLog, journal: Journal,
                              stop: asyncio.Event, interval_s: float = 1.5) -> None:
    """Every interval, every replica that can answer: each scrape must reconcile."""
    while not stop.is_set():
        targets = [r for r in replicas.all if r.scrapable]
        texts = await asyncio.gather(*(scrape(r) for r in targets))
        for replica, text in zip(targets, texts, strict=True):
            check_scrape(replica, text, log, journal)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), interval_s)


def check_scrape(replica: Replica, text: str | None, log: ScrapeLog, journal: Journal) -> None:
    if text is None:
        log.unreachable += 1
        return
    log.scrapes += 1
    log.last[replica.name] = text
    gaps = {name: gap for name, gap in identity_gaps(text).items() if gap != 0}
    if gaps:
        log.violations.append(f"{journal.elapsed():.1f}s {replica.name}: {gaps}")
        journal.note(f"IDENTITY VIOLATION on {replica.name}: {gaps}")


class OffsetWatch:
    """The group's committed offsets (polled during the run; the highest ever seen per
    partition is kept) and the topic's end offsets, through long-lived clients that
    reconnect by themselves after a broker restart."""

    def __init__(self, bootstrap: str, topic: str, group: str, partitions: int) -> None:
        self._group = group
        self._partitions = [TopicPartition(topic, n) for n in range(partitions)]
        self._admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=5_000)
        self._consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None,
                                          enable_auto_commit=False, request_timeout_ms=5_000)
        self.highest: dict[int, int] = {}
        self.polls = 0

    async def start(self) -> None:
        await self._admin.start()
        await self._consumer.start()

    async def close(self) -> None:
        await _stop_quietly(self._consumer)
        await _stop_quietly(self._admin)

    async def committed(self) -> dict[int, int] | None:
        """Per partition, or None while the broker cannot answer."""
        try:
            async with asyncio.timeout(KAFKA_TIMEOUT_S):
                offsets = await self._admin.list_consumer_group_offsets(self._group)
        except (KafkaError, TimeoutError, OSError):
            return None
        found = {tp.partition: meta.offset for tp, meta in offsets.items() if meta.offset >= 0}
        for partition, offset in found.items():
            self.highest[partition] = max(offset, self.highest.get(partition, -1))
        self.polls += 1
        return found

    async def ends(self) -> dict[int, int] | None:
        try:
            async with asyncio.timeout(KAFKA_TIMEOUT_S):
                ends = await self._consumer.end_offsets(self._partitions)
        except (KafkaError, TimeoutError, OSError):
            return None
        return {tp.partition: int(offset) for tp, offset in ends.items()}

    async def poll_periodically(self, stop: asyncio.Event, interval_s: float = 1.0) -> None:
        while not stop.is_set():
            await self.committed()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), interval_s)

    async def caught_up(self) -> tuple[bool, dict[int, int] | None, dict[int, int] | None]:
        """Whether every partition's committed offset is at its end, and both maps."""
        committed, ends = await self.committed(), await self.ends()
        if committed is None or ends is None:
            return False, committed, ends
        return all(committed.get(p, 0) >= end for p, end in ends.items()), committed, ends


# --------------------------------------------------------------------------- dead-letter disk


class DeadLetterDisk:
    """The file dead-letters' directory: a small tmpfs of its own when we may mount one
    (root), so it can be filled up; else a plain directory, and the fault is skipped."""

    def __init__(self, path: Path, size_mib: int = 256) -> None:
        self.path = path
        self._size_mib = size_mib
        self.mounted = False
        self._filler = path / "filler"

    def __enter__(self) -> DeadLetterDisk:
        self.path.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0 and shutil.which("mount"):
            done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={self._size_mib}m",
                                   "tmpfs", str(self.path)], capture_output=True, check=False)
            self.mounted = done.returncode == 0
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self.mounted:
            subprocess.run(["umount", "-l", str(self.path)], capture_output=True, check=False)
            self.mounted = False

    def fill(self) -> int:
        """Write a file until the disk is full; the bytes it took."""
        chunk, written = b"\0" * (1 << 20), 0
        with self._filler.open("ab", buffering=0) as handle:
            while True:
                try:
                    written += handle.write(chunk) or 0
                except OSError as exc:
                    if exc.errno != errno.ENOSPC:
                        raise
                    return written

    def free(self) -> None:
        self._filler.unlink(missing_ok=True)


# --------------------------------------------------------------------------- services


@dataclass(slots=True)
class Services:
    broker: KafkaBroker
    collector: Collector
    disk: DeadLetterDisk
    collector_killed: bool = False  # a SIGKILL may lose records the Collector had accepted

    def signal_broker(self, signum: int) -> None:
        if self.broker.pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.broker.pid, signum)

    def release(self) -> None:
        """For finally blocks: a broker left SIGSTOPped would make every client closing
        after it (and the fixture's stop) wait out its timeout."""
        self.signal_broker(signal.SIGCONT)
        self.disk.free()


# --------------------------------------------------------------------------- the nemesis


Action = Callable[[], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class Fault:
    name: str
    weight: float
    ready: Callable[[], bool]
    inject: Action


class Nemesis:
    """Every few seconds (seeded), one fault among those that can happen now. A fault with
    a duration runs in the background and heals itself after it, so faults overlap; the
    targets it holds (`busy`) are not faulted again until then."""

    GAP_S = (1.5, 4.0)

    def __init__(self, rng: random.Random, replicas: Replicas, services: Services,
                 journal: Journal) -> None:
        self._rng = rng
        self._replicas = replicas
        self._services = services
        self._journal = journal
        self._busy: set[str] = set()
        self._background: set[asyncio.Task[None]] = set()
        self.errors: list[str] = []
        self.injected: Counter[str] = Counter()
        self.faults = [
            Fault("join", 2, self._can_join, self._join),
            Fault("leave", 1, self._can_lose_one, self._leave),
            Fault("kill", 1, self._can_lose_one, self._kill),
            Fault("freeze", 1, lambda: bool(self._free("replica")), self._freeze),
            Fault("stall", 3, lambda: bool(self._free("reader")), self._stall),
            Fault("collector", 1, lambda: "collector" not in self._busy, self._collector),
            Fault("broker-pause", 1, lambda: "broker" not in self._busy, self._broker_pause),
            Fault("broker-restart", 0.5, lambda: "broker" not in self._busy,
                  self._broker_restart),
            Fault("disk-full", 1, self._can_fill_disk, self._disk_full),
        ]

    async def run(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while (left := end - time.monotonic()) > 0:
            await asyncio.sleep(min(left, self._rng.uniform(*self.GAP_S)))
            if time.monotonic() >= end:
                break
            ready = [f for f in self.faults if f.ready()]
            if not ready:  # every target is held by a fault still running
                continue
            fault = self._rng.choices(ready, weights=[f.weight for f in ready])[0]
            self.injected[fault.name] += 1
            await fault.inject()

    async def settle(self, timeout_s: float = 240) -> None:
        """Wait for every background fault to heal itself."""
        if self._background:
            await asyncio.wait_for(asyncio.gather(*self._background), timeout_s)

    def cancel(self) -> None:
        for task in self._background:
            task.cancel()

    # -- readiness

    def _free(self, kind: str) -> list[Replica]:
        return [r for r in self._replicas.live() if f"{kind}:{r.name}" not in self._busy]

    def _can_join(self) -> bool:
        return len(self._replicas.live()) + self._replicas.starting < MAX_REPLICAS

    def _can_lose_one(self) -> bool:
        return len(self._replicas.live()) >= 2 and bool(self._free("replica"))

    def _can_fill_disk(self) -> bool:
        return self._services.disk.mounted and "disk" not in self._busy

    # -- background

    def _spawn(self, what: str, action: Action, *holds: str) -> None:
        self._busy.update(holds)

        async def guarded() -> None:
            try:
                await action()
            except Exception as exc:
                self.errors.append(f"{what}: {exc!r}")
                self._journal.note(f"ERROR in {what}: {exc!r}")
            finally:
                self._busy.difference_update(holds)

        task = asyncio.create_task(guarded(), name=what)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def _hold(self, what: str, hold_s: float, begin: Action, end: Action, *holds: str) -> None:
        async def held() -> None:
            await begin()
            self._journal.note(f"{what} for {hold_s:.1f}s")
            try:
                await asyncio.sleep(hold_s)
            finally:
                await end()
                self._journal.note(f"{what}: healed")
        self._spawn(what, held, *holds)

    async def _start_replica(self, delay_s: float = 0) -> None:
        self._replicas.starting += 1
        try:
            await asyncio.sleep(delay_s)
            await self._replicas.start_one()
        finally:
            self._replicas.starting -= 1

    # -- faults

    async def _join(self) -> None:
        self._journal.note("join: starting a replica")
        self._spawn("join", self._start_replica)

    async def _leave(self) -> None:
        replica = self._rng.choice(self._free("replica"))
        replica.leaving = True
        replica.signal(signal.SIGTERM)
        self._journal.note(f"leave: SIGTERM {replica.name}")

        async def exited() -> None:
            code = await replica.wait_exit(90)
            self._journal.note(f"{replica.name} exited {code}" if code is not None else
                               f"{replica.name} did not exit within 90s of SIGTERM: killed")
        self._spawn(f"leave {replica.name}", exited, f"replica:{replica.name}")

    async def _kill(self) -> None:
        replica = self._rng.choice(self._free("replica"))
        delay_s = self._rng.uniform(2, 8)
        replica.leaving = True
        replica.signal(signal.SIGKILL)
        self._journal.note(f"kill: SIGKILL {replica.name}; a replacement in {delay_s:.1f}s")
        async def replace() -> None:
            await replica.wait_exit(30)
            await self._start_replica(delay_s)
        self._spawn(f"replace {replica.name}", replace, f"replica:{replica.name}")

    async def _freeze(self) -> None:
        # Past the 10 s session timeout the group evicts it; it rejoins when continued.
        replica = self._rng.choice(self._free("replica"))

        async def stop() -> None:
            replica.frozen = True
            replica.signal(signal.SIGSTOP)

        async def cont() -> None:
            replica.signal(signal.SIGCONT)
            replica.frozen = False
        self._hold(f"freeze: SIGSTOP {replica.name}", self._rng.uniform(2, 12), stop, cont,
                   f"replica:{replica.name}")

    async def _stall(self) -> None:
        replica = self._rng.choice(self._free("reader"))

        async def stop() -> None:
            replica.signal_reader(signal.SIGSTOP)

        async def cont() -> None:
            replica.signal_reader(signal.SIGCONT)
        self._hold(f"stall: SIGSTOP the stdout reader of {replica.name}",
                   self._rng.uniform(4, 15), stop, cont, f"reader:{replica.name}")

    async def _collector(self) -> None:
        collector, kill = self._services.collector, self._rng.random() < 0.5

        async def down() -> None:
            if kill:
                self._services.collector_killed = True
            await asyncio.to_thread(collector.kill if kill else collector.stop)

        async def up() -> None:
            await asyncio.to_thread(collector.start)
        self._hold(f"collector: {'SIGKILL' if kill else 'stop'}", self._rng.uniform(3, 10),
                   down, up, "collector")

    async def _broker_pause(self) -> None:
        async def stop() -> None:
            self._services.signal_broker(signal.SIGSTOP)

        async def cont() -> None:
            self._services.signal_broker(signal.SIGCONT)
        self._hold("broker-pause: SIGSTOP the broker", self._rng.uniform(2, 6), stop, cont,
                   "broker")

    async def _broker_restart(self) -> None:
        broker = self._services.broker

        async def restart() -> None:
            started = time.monotonic()
            try:
                await asyncio.to_thread(broker.stop)
            finally:
                await asyncio.to_thread(broker.start)
            self._journal.note(f"broker-restart: back after {time.monotonic() - started:.1f}s")
        self._journal.note("broker-restart: stopping the broker")
        self._spawn("broker-restart", restart, "broker")

    async def _disk_full(self) -> None:
        disk = self._services.disk

        async def fill() -> None:
            taken = await asyncio.to_thread(disk.fill)
            self._journal.note(f"disk-full: {taken >> 20} MiB filler written")

        async def free() -> None:
            await asyncio.to_thread(disk.free)
        self._hold("disk-full: the dead-letter disk", self._rng.uniform(3, 10), fill, free,
                   "disk")


async def heal(replicas: Replicas, services: Services, journal: Journal,
               minimum: int = 1) -> None:
    """After the nemesis has settled: whatever is still down or stopped comes back."""
    for replica in replicas.all:
        replica.signal(signal.SIGCONT)
        replica.signal_reader(signal.SIGCONT)
        replica.frozen = False
    services.signal_broker(signal.SIGCONT)
    services.disk.free()
    if not services.broker.running:
        journal.note("heal: starting the broker")
        await asyncio.to_thread(services.broker.start)
    if not services.collector.running:
        journal.note("heal: starting the collector")
        await asyncio.to_thread(services.collector.start)
    while len(replicas.live()) < minimum:
        journal.note("heal: starting a replica")
        await replicas.start_one()


# --------------------------------------------------------------------------- oracle


@dataclass(slots=True)
class Outputs:
    """Every id that came out of the run, by where; and lines that were cut short in the
    middle of an output (not at its end, where a SIGKILL may leave one)."""

    stdout: set[str] = field(default_factory=set)
    collector: set[str] = field(default_factory=set)
    dead: dict[str, set[str]] = field(default_factory=dict)
    torn: Counter[str] = field(default_factory=Counter)

    def anywhere(self) -> set[str]:
        return self.stdout | self.collector | set().union(*self.dead.values())

    def reached(self, sink: str) -> set[str]:
        """Delivered by `sink`, dead-lettered by it, or rejected before any sink."""
        delivered = self.stdout if sink == "stdout" else self.collector
        return delivered | self.dead.get(sink, set()) | self.dead.get("source", set())


def json_objects(line: bytes, opening: str) -> tuple[list[dict[str, Any]], bool]:
    """The JSON objects on one line, and whether the line is torn: a write cut short and
    followed by another leaves a partial object in front of whole ones. The whole ones
    (each starting with `opening`) are still recovered."""
    try:
        whole = json.loads(line)
    except ValueError:
        pass
    else:
        return ([whole] if isinstance(whole, dict) else []), False
    text, decoder, found = line.decode("utf-8", "replace"), json.JSONDecoder(), []
    start = text.find(opening)
    while start != -1:
        try:
            value, end = decoder.raw_decode(text, start)
        except ValueError:
            start = text.find(opening, start + 1)
            continue
        if isinstance(value, dict):
            found.append(value)
        start = text.find(opening, end)
    return found, True


def read_ids(lines: Iterable[bytes], opening: str, key: str, outputs: Outputs,
             where: str) -> Iterator[dict[str, Any]]:
    """The objects on `lines` that have `key`, counting torn lines under `where`."""
    for line in lines:
        objects, torn = json_objects(line, opening)
        outputs.torn[where] += torn
        yield from (o for o in objects if key in o)


def collector_ids(collector: Collector, outputs: Outputs) -> None:
    """Read here rather than with Collector.log_records, which stops at the first bad line:
    a SIGKILLed Collector can leave one in the middle of its file."""
    try:
        lines = collector.output_path.read_bytes().splitlines()
    except FileNotFoundError:
        return
    for request in read_ids(lines, '{"resourceLogs":', "resourceLogs", outputs, "collector"):
        for resource in request["resourceLogs"]:
            for scope in resource.get("scopeLogs", []):
                for record in scope.get("logRecords", []):
                    outputs.collector.update(
                        str(attribute["value"].get("stringValue"))
                        for attribute in record.get("attributes", [])
                        if attribute.get("key") == "cloudevents.event_id")


def dead_letter_id(entry: Mapping[str, Any]) -> str | None:
    """The event id of a dead-letter entry: from the signed event, from a summary, or from
    the raw input value."""
    event = entry.get("event")
    if isinstance(event, dict) and "id" in event:
        return str(event["id"])
    if "event_id" in entry:
        return str(entry["event_id"])
    value = entry.get("value")
    if isinstance(value, str):
        with contextlib.suppress(ValueError, KeyError, TypeError):
            return str(json.loads(value)["event_id"])
    return None


def add_dead_letters(entries: Iterable[Mapping[str, Any]], outputs: Outputs) -> None:
    for entry in entries:
        if (found := dead_letter_id(entry)) is not None:
            outputs.dead.setdefault(str(entry["origin"]), set()).add(found)


async def collect_outputs(replicas: Replicas, collector: Collector) -> Outputs:
    topology, outputs = replicas.topology, Outputs()
    for replica in replicas.all:
        outputs.stdout.update(str(o["id"]) for o in read_ids(
            replica.lines(), '{"specversion":', "id", outputs, f"stdout of {replica.name}"))
    collector_ids(collector, outputs)
    on_topic = await consume_to_end(topology.bootstrap, topology.dlq_topic, 120)
    add_dead_letters(read_ids((r.value for r in on_topic), '{"id":', "origin", outputs,
                              "dead-letter topic"), outputs)
    for path in sorted(topology.dlq_dir.glob("*/deadletter-*.jsonl")):
        add_dead_letters(read_ids(path.read_bytes().splitlines(), '{"id":', "origin", outputs,
                                  f"dead-letter file {path.parent.name}"), outputs)
    return outputs


async def input_positions(bootstrap: str, topic: str) -> dict[str, list[tuple[int, int]]]:
    """Every id on the input topic, with each (partition, offset) it was written at."""
    positions: dict[str, list[tuple[int, int]]] = defaultdict(list)
    for record in await consume_to_end(bootstrap, topic, 120):
        positions[str(strict_json(record.value)["event_id"])].append(
            (record.partition, record.offset))
    return positions


@dataclass(slots=True)
class Verdict:
    """The oracle's findings; `failures` empty means the run passed."""

    seed: int
    seconds: float
    expected: int = 0
    failures: list[str] = field(default_factory=list)
    summary: list[str] = field(default_factory=list)


def describe_missing(missing: set[str], positions: Mapping[str, list[tuple[int, int]]],
                     highest: Mapping[int, int], limit: int = 15) -> str:
    """Missing ids, with whether a committed offset ever passed them: past = lost (the group
    will never read them again), not past = never read."""
    past = {i for i in missing
            if any(offset < highest.get(p, -1) for p, offset in positions.get(i, []))}
    by_partition = Counter(p for i in missing for p, _ in positions.get(i, [])[:1])
    shown = ", ".join(f"{i}@{_where(positions.get(i, []))}" for i in sorted(missing)[:limit])
    return (f"{len(missing)} ids ({len(past)} below an offset the group committed: LOST; "
            f"{len(missing) - len(past)} never committed past); by partition "
            f"{dict(sorted(by_partition.items()))}; e.g. {shown}")


def _where(at: Sequence[tuple[int, int]]) -> str:
    return "/".join(f"p{p}:{offset}" for p, offset in at) or "(not on the input topic)"


def judge_ids(verdict: Verdict, expected: set[str], outputs: Outputs,
              positions: Mapping[str, list[tuple[int, int]]], highest: Mapping[int, int],
              strict_otlp: bool) -> None:
    """Every input id reached an output or the dead-letter; per sink for stdout (and for
    OTLP unless the Collector was SIGKILLed, which may lose what it had accepted)."""
    verdict.expected = len(expected)
    checks = [("anywhere", outputs.anywhere(), True),
              ("stdout or its dead-letter", outputs.reached("stdout"), True),
              ("the Collector or the otlp dead-letter", outputs.reached("otlp"), strict_otlp)]
    for where, found, strict in checks:
        missing = expected - found
        if not missing:
            continue
        line = f"missing from {where}: {describe_missing(missing, positions, highest)}"
        (verdict.failures if strict else verdict.summary).append(line)
    dead = {origin: len(ids) for origin, ids in sorted(outputs.dead.items())}
    verdict.summary.append(
        f"ids: {len(expected)} in; distinct on stdout {len(outputs.stdout & expected)}, at "
        f"the Collector {len(outputs.collector & expected)}, dead-lettered by origin {dead}")
    for where, count in sorted(outputs.torn.items()):
        # Garbage in the middle of an output: a write cut short, then the next one. The
        # Collector's own file may show it after a SIGKILL, which is not govpipe's doing.
        if count:
            (verdict.summary if where == "collector" else verdict.failures).append(
                f"{count} torn line(s) in the {where}")


def judge_offsets(verdict: Verdict, committed: Mapping[int, int] | None,
                  ends: Mapping[int, int] | None) -> None:
    if committed is None or ends is None:
        verdict.failures.append("committed or end offsets unavailable at the end")
        return
    behind = {p: (committed.get(p), end) for p, end in ends.items() if committed.get(p) != end}
    if behind:
        verdict.failures.append(f"committed != end offsets (partition: (committed, end)): "
                                f"{behind}")
    verdict.summary.append(f"end offsets {dict(sorted(ends.items()))}, "
                           f"{sum(ends.values())} records")


def replica_report(replica: Replica, last_scrape: str | None) -> str:
    counts = ""
    if last_scrape is not None:
        counts = ", ".join(f"{short} {metric_value(last_scrape, name):.0f}" for short, name in (
            ("read", "govpipe_source_records_total"),
            ("delivered", "govpipe_sink_delivered_total"),
            ("failed", "govpipe_sink_failed_total"),
            ("dead-lettered", "govpipe_deadletter_written_total"),
            ("offset gaps", "govpipe_source_offset_gaps_total")))
    return (f"{replica.name} ({replica.mode}): exit {replica.exit_code}, "
            f"{len(replica.lines())} stdout lines, {replica.revocation_timeouts()} "
            f"revocations with unsettled records; last scrape: {counts or 'none'}")
