"""Helpers for the fault suite: `govpipe run` as a subprocess (listen port from its start-up
log line, /metrics scrapes, peak RSS), a fast bulk producer, strict JSON and id bookkeeping."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from itertools import pairwise
from pathlib import Path
from typing import Any

import aiohttp
from aiokafka import AIOKafkaProducer
from prometheus_client.parser import text_string_to_metric_families

from tests.integration.daemon_harness import GOVPIPE, complete_lines
from tests.integration.daemon_harness import run_env as harness_run_env
from tests.waiting import eventually


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not strict JSON")


def strict_json(raw: bytes | str) -> Any:
    """Parse with a parser that refuses NaN/Infinity (what a strict consumer does)."""
    return json.loads(raw, parse_constant=_refuse_constant)


def run_env(bootstrap: str, topic: str, group: str, tmp_path: Path,
            **overrides: str) -> dict[str, str]:
    """The harness's `govpipe run` environment, with a shutdown timeout the suite's
    SIGTERMs can wait out."""
    return harness_run_env(bootstrap, topic, group, tmp_path,
                           **{"GOVPIPE_SHUTDOWN__TIMEOUT_S": "20", **overrides})


class GovpipeProcess:
    """One `govpipe run` child: stdout to `<name>.jsonl`, stderr (JSON logs) to `<name>.log`."""

    def __init__(self, env: Mapping[str, str], tmp_path: Path, name: str,
                 argv: Sequence[str] | None = None) -> None:
        self.env = dict(env)
        self.cwd = tmp_path
        self.out = tmp_path / f"{name}.jsonl"
        self.log = tmp_path / f"{name}.log"
        self.argv = list(argv) if argv is not None else [str(GOVPIPE), "run"]
        self.proc: asyncio.subprocess.Process | None = None
        self.listen: str | None = None

    async def start(self, timeout_s: float = 60) -> GovpipeProcess:
        with self.out.open("wb") as stdout, self.log.open("wb") as stderr:
            self.proc = await asyncio.create_subprocess_exec(
                *self.argv, cwd=self.cwd, env=self.env, stdin=asyncio.subprocess.DEVNULL,
                stdout=stdout, stderr=stderr)
        await eventually(self._found_listen, timeout_s, interval_s=0.1)
        return self

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.returncode is None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def log_entries(self) -> list[dict[str, Any]]:
        entries = []
        for line in self.log.read_bytes().splitlines():
            try:
                entries.append(json.loads(line))
            except ValueError:
                continue  # a line cut short, or a library writing plain text
        return entries

    def _found_listen(self) -> bool:
        assert self.proc is not None
        if self.proc.returncode is not None:
            raise AssertionError(f"govpipe exited early ({self.proc.returncode}):\n"
                                 f"{self.log.read_text()[-3000:]}")
        for entry in self.log_entries():
            if entry.get("message") == "govpipe started":
                self.listen = str(entry["listen"])
                return True
        return False

    async def scrape(self) -> str:
        async with aiohttp.ClientSession() as session, session.get(
                f"http://{self.listen}/metrics", timeout=aiohttp.ClientTimeout(10)) as response:
            assert response.status == 200
            return await response.text()

    async def settled_scrape(self, timeout_s: float = 60) -> str:
        """A scrape taken once nothing is in flight in any sink or in the dead-letter."""
        async with asyncio.timeout(timeout_s):
            while True:
                text = await self.scrape()
                if metric_value(text, "govpipe_sink_in_flight") == 0 and metric_value(
                        text, "govpipe_source_in_flight") == 0:
                    return text
                await asyncio.sleep(0.2)

    async def value(self, name: str, **labels: str) -> float:
        return metric_value(await self.scrape(), name, **labels)

    def peak_rss_kib(self) -> int:
        """VmHWM: the peak resident set size of the live process, in KiB."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
        raise AssertionError("no VmHWM in /proc status")

    async def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        assert await self.proc.wait() == -signal.SIGKILL

    async def terminate(self, timeout_s: float = 60) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return await asyncio.wait_for(self.proc.wait(), timeout_s)

    async def ensure_stopped(self) -> None:
        """For finally blocks: SIGKILL (by pid) a child the test left running."""
        if self.proc is not None and self.proc.returncode is None:
            self.proc.send_signal(signal.SIGKILL)
            await self.proc.wait()

    def lines(self) -> list[bytes]:
        return complete_lines(self.out)


class PipedGovpipe(GovpipeProcess):
    """`govpipe run` whose stdout is a pipe read by `cat` into `<name>.jsonl`. Stopping `cat`
    (`stall_reader`) stalls the stdout sink the way a stuck reader of a pipe does: the pipe
    fills, the write blocks, the sink's queue fills, the source pauses."""

    reader: asyncio.subprocess.Process | None = None

    async def start(self, timeout_s: float = 60) -> PipedGovpipe:
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
        return self

    def signal_reader(self, signum: int) -> None:
        if self.reader is not None and self.reader.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.reader.send_signal(signum)

    def stall_reader(self) -> None:
        self.signal_reader(signal.SIGSTOP)

    def resume_reader(self) -> None:
        self.signal_reader(signal.SIGCONT)

    async def ensure_stopped(self) -> None:
        self.resume_reader()
        await super().ensure_stopped()
        if self.reader is not None:
            try:  # cat ends at end of input once govpipe is gone
                await asyncio.wait_for(self.reader.wait(), 30)
            except TimeoutError:
                self.signal_reader(signal.SIGKILL)
                await self.reader.wait()


def metric_value(text: str, name: str, **labels: str) -> float:
    """The sum of `name`'s samples whose labels include `labels` (0 when absent)."""
    total = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                total += sample.value
    return total


def metric_totals(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a scrape, by (name, sorted labels)."""
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


async def produce_fast(
        bootstrap: str, topic: str, values: Iterable[bytes | None],
        headers: Sequence[Sequence[tuple[str, bytes]]] | None = None,
        keys: Sequence[bytes | None] | None = None) -> list[Any]:
    """Bulk produce, in order (large batches, linger, idempotent): ~10x the rate of
    `produce`, and records up to 16 MB. Returns each record's metadata."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=50,
                                enable_idempotence=True, max_batch_size=1_048_576,
                                max_request_size=16_777_216)
    await producer.start()
    count = 0
    done: list[Any] = []
    try:
        pending: list[asyncio.Future[Any]] = []
        for value in values:
            record_headers = None if headers is None else list(headers[count])
            key = None if keys is None else keys[count]
            pending.append(await producer.send(topic, value, key=key, headers=record_headers))
            count += 1
            if len(pending) >= 50_000:
                done += await asyncio.gather(*pending)
                pending.clear()
        done += await asyncio.gather(*pending)
    finally:
        await producer.stop()
    return done


async def produce_paced(bootstrap: str, topic: str, values: Sequence[bytes],
                        per_second: float, chunk: int = 200) -> None:
    """Produce `values` as a steady stream of about `per_second` records a second."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    await producer.start()
    try:
        started = time.monotonic()
        for first in range(0, len(values), chunk):
            pending = [await producer.send(topic, value)
                       for value in values[first:first + chunk]]
            await asyncio.gather(*pending)
            due = started + (first + chunk) / per_second
            await asyncio.sleep(max(0.0, due - time.monotonic()))
    finally:
        await producer.stop()


def event_value(number: int, prefix: str) -> bytes:
    """A small valid Agent OS event with id `<prefix>-<number>`; agent ids spread keys."""
    return (b'{"schema_version":"1","event_id":"%s-%08d","occurred_at":'
            b'"2026-11-25T14:02:10.039522+00:00","kind":"policy_check","severity":"info",'
            b'"agent_id":"agent-%d","action":"web_search","decision":"allow","reason":"ok",'
            b'"latency_ms":1.5,"attributes":{"n":%d}}'
            % (prefix.encode(), number, number % 50, number))


def event_ids(count: int, prefix: str) -> set[str]:
    return {f"{prefix}-{number:08d}" for number in range(count)}


def copies_by_id(bodies: Iterable[bytes]) -> dict[str, list[bytes]]:
    copies: dict[str, list[bytes]] = defaultdict(list)
    for body in bodies:
        copies[strict_json(body)["id"]].append(body)
    return copies


class RateWindows:
    """Per-window increments of counters, sampled from a process's /metrics."""

    def __init__(self) -> None:
        self.samples: list[tuple[float, dict[str, float]]] = []

    def add(self, values: Mapping[str, float]) -> None:
        self.samples.append((time.monotonic(), dict(values)))

    def rates(self, name: str, since: float, until: float) -> list[float]:
        """Events per second of `name` over each pair of consecutive samples in the span."""
        inside = [(t, v[name]) for t, v in self.samples if since <= t <= until]
        return [(b - a) / (tb - ta) for (ta, a), (tb, b) in pairwise(inside) if tb > ta]


async def eventually_async(predicate: Callable[[], Awaitable[bool]], timeout_s: float = 30,
                           interval_s: float = 0.2) -> None:
    """`eventually` for a predicate that must await (a scrape, an admin request)."""
    async with asyncio.timeout(timeout_s):
        while True:
            if await predicate():
                return
            await asyncio.sleep(interval_s)
