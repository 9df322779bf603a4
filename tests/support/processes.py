"""`govpipe run` as a subprocess: its environment, the child itself (listen address from
its start-up log line, /metrics scrapes, peak RSS, signals), and what it writes (stdout
lines, dead-letter files)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import shutil
import signal
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Self

import aiohttp

from tests.support.daemons import KEY
from tests.support.metrics import metric_value
from tests.support.waiting import eventually

GOVPIPE = Path(sys.executable).parent / "govpipe"


def govpipe_env(key: bytes, **overrides: str) -> dict[str, str]:
    """The environment of a `govpipe run` child signing with `key`, /metrics on a free port;
    overrides are GOVPIPE_* keys. Nothing of the caller's GOVPIPE_* environment leaks in."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GOVPIPE_")}
    env.update({"GOVPIPE_SIGNING_KEY": base64.b64encode(key).decode(),
                "GOVPIPE_SERVER__LISTEN": "127.0.0.1:0"}, **overrides)
    return env


def run_env(bootstrap: str, topic: str, group: str, tmp_path: Path,
            **overrides: str) -> dict[str, str]:
    """`govpipe_env` (signing with the daemons' KEY) on a Kafka source, dead-letters in
    `tmp_path/dlq`, and a shutdown timeout a test's SIGTERM (`GovpipeProcess.terminate`
    waits 60 s) can wait out; overrides are GOVPIPE_* keys."""
    return govpipe_env(KEY, **{
        "GOVPIPE_SOURCE__KIND": "kafka", "GOVPIPE_KAFKA__BOOTSTRAP_SERVERS": bootstrap,
        "GOVPIPE_SOURCE__TOPIC": topic, "GOVPIPE_SOURCE__GROUP_ID": group,
        "GOVPIPE_SOURCE__COMMIT_INTERVAL_S": "0.5",
        "GOVPIPE_DEADLETTER__KIND": "file", "GOVPIPE_DEADLETTER__PATH": str(tmp_path / "dlq"),
        "GOVPIPE_SHUTDOWN__TIMEOUT_S": "20", **overrides})


def complete_lines(path: Path) -> list[bytes]:
    """Whole lines only: a SIGKILL can cut the last write short."""
    data = path.read_bytes()
    return data[: data.rfind(b"\n") + 1].splitlines()


def read_deadletters(directory: Path) -> list[dict[str, Any]]:
    """Every entry of the file dead-letter in `directory`, file by file."""
    entries = []
    for path in sorted(directory.glob("deadletter-*.jsonl")):
        entries += [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    return entries


async def listening_port(stderr: asyncio.StreamReader) -> int:
    """The /metrics port from the start-up log line of a child whose stderr is a pipe."""
    while line := await stderr.readline():
        entry = json.loads(line)
        if entry.get("message") == "govpipe started":
            return int(entry["listen"].rpartition(":")[2])
    raise AssertionError("govpipe exited before it started")


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

    async def spawn(self) -> Self:
        """Start the child without waiting for it to serve."""
        with self.out.open("wb") as stdout, self.log.open("wb") as stderr:
            self.proc = await asyncio.create_subprocess_exec(
                *self.argv, cwd=self.cwd, env=self.env, stdin=asyncio.subprocess.DEVNULL,
                stdout=stdout, stderr=stderr)
        return self

    async def start(self, timeout_s: float = 60) -> Self:
        """Start the child and wait for its start-up log line (`listen` is then known)."""
        await self.spawn()
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

    async def spawn(self) -> Self:
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


class FedGovpipe(GovpipeProcess):
    """`govpipe run` reading its stdin from the test (`feed`, then `end_input`)."""

    async def spawn(self) -> Self:
        with self.out.open("wb") as stdout, self.log.open("wb") as stderr:
            self.proc = await asyncio.create_subprocess_exec(
                *self.argv, cwd=self.cwd, env=self.env, stdin=asyncio.subprocess.PIPE,
                stdout=stdout, stderr=stderr)
        return self

    async def feed(self, lines: Sequence[bytes]) -> None:
        assert self.proc is not None
        assert self.proc.stdin is not None
        self.proc.stdin.write(b"".join(line + b"\n" for line in lines))
        await self.proc.stdin.drain()

    async def end_input(self, timeout_s: float = 60) -> int:
        """Close stdin and wait for the exit code."""
        assert self.proc is not None
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        return await asyncio.wait_for(self.proc.wait(), timeout_s)

    def logged(self, message: str) -> list[dict[str, Any]]:
        """The log entries whose message starts with `message`."""
        return [entry for entry in self.log_entries()
                if str(entry.get("message", "")).startswith(message)]
