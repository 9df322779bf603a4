"""A real Prometheus server (the Debian package's binary) for integration tests.

Each :class:`Prometheus` lives in its own temp dir (config, TSDB, log), listens on a free
127.0.0.1 port, scrapes its targets every second with the given rule files loaded and
evaluated every second, and is stopped by its process id. Targets are read through file
service discovery, so a test can point Prometheus at a daemon whose port it learns later::

    with Prometheus(["127.0.0.1:9464"], rule_files=[Path("config/alerts.yml")]) as prom:
        samples = asyncio.run(prom.query("up"))
        prom.set_targets(["127.0.0.1:9465"])   # e.g. a daemon whose port is known later
"""

from __future__ import annotations

import atexit
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import aiohttp

__all__ = ["Alert", "Prometheus", "QueryError", "Sample", "ServiceError"]

JOB = "govpipe"
_POLL_S = 0.1
_TAIL_LINES = 40


class ServiceError(Exception):
    """Prometheus could not be started; the message carries the tail of its log."""


class QueryError(Exception):
    """The Prometheus HTTP API refused a query or answered something unexpected."""


@dataclass(frozen=True, slots=True)
class Sample:
    """One element of an instant vector (or a scalar, with no labels)."""

    labels: Mapping[str, str]
    value: float


@dataclass(frozen=True, slots=True)
class Alert:
    """One active alert as /api/v1/alerts reports it: state is "pending" or "firing"."""

    name: str
    state: str
    labels: Mapping[str, str]
    annotations: Mapping[str, str]
    value: float


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _tail(text: str, lines: int = _TAIL_LINES) -> str:
    return "\n".join(text.splitlines()[-lines:])


def _binary() -> str:
    path = shutil.which("prometheus")
    if path is None:
        raise ServiceError("prometheus not found on PATH: install the Debian package "
                           "prometheus (scripts/test does)")
    return path


class Prometheus:
    """One Prometheus server process; ``start``/``stop``/``close`` are safe to repeat."""

    def __init__(self, targets: Sequence[str] = (), *, rule_files: Sequence[Path] = (),
                 scrape_interval_s: float = 1.0, startup_timeout_s: float = 30.0) -> None:
        """Prepare (not start) a server scraping ``targets`` (HOST:PORT; ``set_targets``
        changes them) and evaluating ``rule_files``, both every ``scrape_interval_s``."""
        self._targets = list(targets)
        self._rule_files = [path.resolve() for path in rule_files]
        self._interval = f"{int(scrape_interval_s * 1000)}ms"
        self._startup_timeout_s = startup_timeout_s
        self.port = _free_port()
        self.work_dir = Path(tempfile.mkdtemp(prefix="govpipe-prometheus-"))
        self.log_path = self.work_dir / "prometheus.log"
        self._targets_path = self.work_dir / "targets.json"
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """Base URL of the web API, ``http://127.0.0.1:PORT``."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        """Process id of the running server, or None when it is not running."""
        return self._proc.pid if self.running and self._proc is not None else None

    @property
    def running(self) -> bool:
        """True while the server process is alive."""
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> None:
        """Start the server and block until /-/ready answers 200; ServiceError if not."""
        if self.running:
            return
        self._write_config()
        self._proc = self._spawn()
        atexit.register(self.stop)  # a crashed test run must not leak the server
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise

    def stop(self, timeout_s: float = 10.0) -> None:
        """SIGTERM the server (by pid), wait, SIGKILL it if still alive after ``timeout_s``."""
        atexit.unregister(self.stop)
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def close(self) -> None:
        """Stop the server and delete its temp dir."""
        self.stop()
        shutil.rmtree(self.work_dir, ignore_errors=True)

    def __enter__(self) -> Self:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def set_targets(self, targets: Sequence[str], **labels: str) -> None:
        """Scrape exactly ``targets`` (HOST:PORT) from now on, with job="govpipe" + labels.

        Written atomically: file discovery never sees a half-written file.
        """
        self._targets = list(targets)
        groups = [{"targets": self._targets, "labels": labels}] if targets else []
        partial = self._targets_path.with_suffix(".tmp")
        partial.write_text(json.dumps(groups))
        os.replace(partial, self._targets_path)

    def log_tail(self, lines: int = _TAIL_LINES) -> str:
        """The last ``lines`` lines of the server's log."""
        try:
            return _tail(self.log_path.read_text(errors="replace"), lines)
        except FileNotFoundError:
            return "(no prometheus.log)"

    async def query(self, expr: str) -> list[Sample]:
        """Evaluate ``expr`` now (/api/v1/query); a scalar comes back as one unlabelled sample."""
        data = await self._get("/api/v1/query", {"query": expr})
        kind, result = data["resultType"], data["result"]
        if kind == "scalar":
            return [Sample({}, float(result[1]))]
        if kind != "vector":
            raise QueryError(f"{expr!r}: expected an instant vector, got {kind}")
        return [Sample(dict(item["metric"]), float(item["value"][1])) for item in result]

    async def alerts(self) -> list[Alert]:
        """Every pending or firing alert (/api/v1/alerts)."""
        data = await self._get("/api/v1/alerts", {})
        return [Alert(name=item["labels"]["alertname"], state=item["state"],
                      labels=dict(item["labels"]), annotations=dict(item["annotations"]),
                      value=float(item["value"]))
                for item in data["alerts"]]

    async def _get(self, path: str, params: Mapping[str, str]) -> Any:
        timeout = aiohttp.ClientTimeout(total=10)
        async with aiohttp.ClientSession(timeout=timeout) as http, \
                http.get(self.url + path, params=params) as response:
            body = await response.json(content_type=None)
        if not isinstance(body, dict) or body.get("status") != "success":
            raise QueryError(f"{path} {dict(params)} -> HTTP {response.status}: {body!r}")
        return body["data"]

    def _write_config(self) -> None:
        if not self._targets_path.exists():
            self.set_targets(self._targets)
        config = {
            "global": {"scrape_interval": self._interval, "scrape_timeout": self._interval,
                       "evaluation_interval": self._interval},
            "rule_files": [str(path) for path in self._rule_files],
            "scrape_configs": [{
                "job_name": JOB,
                "file_sd_configs": [{"files": [str(self._targets_path)],
                                     "refresh_interval": self._interval}],
            }],
        }
        # JSON is YAML: no YAML library needed to write Prometheus's config.
        (self.work_dir / "prometheus.yml").write_text(json.dumps(config, indent=2))

    def _spawn(self) -> subprocess.Popen[bytes]:
        argv = [
            _binary(),
            f"--config.file={self.work_dir / 'prometheus.yml'}",
            f"--storage.tsdb.path={self.work_dir / 'data'}",
            f"--web.listen-address=127.0.0.1:{self.port}",
            "--log.level=warn",
        ]
        with self.log_path.open("ab") as log:
            return subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                    cwd=self.work_dir, start_new_session=True)

    def _wait_ready(self) -> None:
        """Poll /-/ready until it answers 200, the process exits, or the deadline passes."""
        deadline = time.monotonic() + self._startup_timeout_s
        while time.monotonic() < deadline:
            proc = self._proc
            if proc is None or proc.poll() is not None:
                code = None if proc is None else proc.returncode
                raise ServiceError(f"prometheus exited during startup (exit {code}); "
                                   f"{self.log_path}:\n{self.log_tail()}")
            if self._ready():
                return
            time.sleep(_POLL_S)
        raise ServiceError(f"prometheus not ready within {self._startup_timeout_s:.0f}s "
                           f"({self.url}); {self.log_path}:\n{self.log_tail()}")

    def _ready(self) -> bool:
        try:
            with urllib.request.urlopen(self.url + "/-/ready", timeout=1) as response:
                return int(response.status) == 200
        except (urllib.error.URLError, OSError):
            return False
