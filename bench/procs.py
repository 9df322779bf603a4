"""The processes under test, each run as operators run it and stopped by its PID:
`govpipe run` configured by GOVPIPE_* overrides, or the bare passthrough baseline."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import aiohttp
import orjson

from pipeline.delivery.counts import REJECTED

GOVPIPE = Path(sys.executable).parent / "govpipe"
_POLL_S = 0.02
VERIFIED = "govpipe_inbound_verification_total"


@dataclass(frozen=True)
class Topics:
    """Where one measurement reads and writes, on which broker, in which group."""

    bootstrap: str
    source: str
    output: str
    group: str


class Worker(Protocol):
    """One process of a scenario."""

    @property
    def pid(self) -> int:
        """Its process id."""

    async def wait_ready(self) -> None:
        """Return once the process owns partitions (it is consuming)."""

    async def first_consume(self) -> float:
        """Unix time (s) at which it first read records; polls until it has."""

    def peak_rss_mb(self) -> float:
        """VmHWM of the process, in MiB."""

    def cpu_seconds(self) -> float:
        """CPU time (user + system) the process has used so far."""

    async def stop(self) -> None:
        """SIGTERM by PID and wait for the exit."""


def vm_hwm_mb(pid: int) -> float:
    """Peak resident set size (VmHWM) of ``pid`` in MiB, from /proc."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmHWM for pid {pid}")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of ``pid`` so far, in seconds, from /proc (threads included)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2:].split()  # after "pid (comm) "; comm may hold spaces
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime


def _log_lines(path: Path) -> list[dict[str, object]]:
    lines = path.read_bytes().splitlines() if path.exists() else []
    return [orjson.loads(line) for line in lines if line.startswith(b"{")]


@dataclass
class _Process:
    proc: subprocess.Popen[bytes]
    log: Path

    @property
    def pid(self) -> int:
        return self.proc.pid

    def peak_rss_mb(self) -> float:
        return vm_hwm_mb(self.proc.pid)

    def cpu_seconds(self) -> float:
        return cpu_seconds(self.proc.pid)

    async def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.to_thread(self.proc.wait, 60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            await asyncio.to_thread(self.proc.wait)

    def check_alive(self) -> None:
        if self.proc.poll() is not None:
            tail = self.log.read_text(errors="replace")[-2000:]
            raise RuntimeError(f"{self.proc.args!r} exited {self.proc.returncode}:\n{tail}")


def _spawn(argv: list[str], env: dict[str, str], log: Path, stdout: Path | None) -> _Process:
    with log.open("wb") as err, (stdout or Path(os.devnull)).open("wb") as out:
        proc = subprocess.Popen(argv, env=env, cwd=log.parent, stdin=subprocess.DEVNULL,
                                stdout=out, stderr=err)
    return _Process(proc, log)


@dataclass
class GovpipeWorker(_Process):
    """`govpipe run`; readiness from /readyz, first read from /metrics."""

    port: int | None = field(default=None)

    @classmethod
    def start(cls, env: dict[str, str], work: Path) -> GovpipeWorker:
        """Spawn `govpipe run` with ``env``, stdout to /dev/null, logs in ``work``."""
        process = _spawn([str(GOVPIPE), "run"], env, work / "govpipe.log", None)
        return cls(process.proc, process.log)

    async def _port(self) -> int:
        while self.port is None:
            self.check_alive()
            for entry in _log_lines(self.log):
                if entry.get("message") == "govpipe started":
                    self.port = int(str(entry["listen"]).rpartition(":")[2])
            await asyncio.sleep(_POLL_S)
        return self.port

    async def _get(self, path: str) -> str:
        url = f"http://127.0.0.1:{await self._port()}{path}"
        async with aiohttp.ClientSession() as http, http.get(url) as response:
            return await response.text()

    async def wait_ready(self) -> None:
        while True:
            self.check_alive()
            body = orjson.loads(await self._get("/readyz"))
            source = [c for c in body["components"] if c["name"] == "source"]
            if source and source[0]["status"] == "healthy":
                return
            await asyncio.sleep(_POLL_S)

    async def metrics(self) -> str:
        """Its /metrics page."""
        return await self._get("/metrics")

    async def first_consume(self) -> float:
        while True:
            self.check_alive()
            polled = time.time()
            for line in (await self.metrics()).splitlines():
                if line.startswith("govpipe_source_records_total ") and float(line.split()[1]):
                    return polled
            await asyncio.sleep(_POLL_S)


def samples(page: str, name: str) -> dict[str, float]:
    """Every sample of ``name`` on a Prometheus text page, by its labels as written
    (``{reason="replay"}``; "total" for the unlabelled one)."""
    found = {}
    for line in page.splitlines():
        if line.startswith(name) and line[len(name):len(name) + 1] in ("{", " "):
            labels, _, value = line.rpartition(" ")
            found[labels[len(name):] or "total"] = float(value)
    return found


async def check_accepted(workers: Sequence[Worker], expected: int, signed: bool) -> None:
    """RuntimeError unless the govpipe workers among ``workers`` rejected no record and,
    with ``signed`` input, verified at least ``expected`` producer signatures ok between
    them (a record read again after a rebalance is verified again)."""
    rejected: dict[str, float] = {}
    verified = 0.0
    for worker in workers:
        if isinstance(worker, GovpipeWorker):
            page = await worker.metrics()
            for reason, count in samples(page, REJECTED).items():
                rejected[reason] = rejected.get(reason, 0.0) + count
            verified += samples(page, VERIFIED).get('{result="ok"}', 0.0)
    if any(rejected.values()):
        raise RuntimeError(f"govpipe rejected records: {rejected}")
    if signed and verified < expected:
        raise RuntimeError(f"{verified:.0f} of {expected:,} producer signatures verified ok")


@dataclass
class PassthroughWorker(_Process):
    """bench.passthrough; readiness and first read from the lines it prints."""

    out: Path = field(default=Path(os.devnull))

    @classmethod
    def start(cls, topics: Topics, work: Path) -> PassthroughWorker:
        """Spawn the baseline passthrough between ``topics``."""
        argv = [sys.executable, "-m", "bench.passthrough", topics.bootstrap, topics.source,
                topics.output, topics.group]
        env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parent.parent))
        out = work / "passthrough.out"
        process = _spawn(argv, env, work / "passthrough.log", out)
        return cls(process.proc, process.log, out)

    async def _wait_for(self, key: str) -> float:
        while True:
            self.check_alive()
            for entry in _log_lines(self.out):
                if key in entry:
                    return float(str(entry[key]))
            await asyncio.sleep(_POLL_S)

    async def wait_ready(self) -> None:
        await self._wait_for("assigned")

    async def first_consume(self) -> float:
        return await self._wait_for("first_consume")
