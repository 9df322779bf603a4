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

import json
import os
import shutil
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from tests.support.infra.process import ServiceError, ServiceProcess, free_ports

__all__ = ["Alert", "Prometheus", "QueryError", "Sample", "ServiceError"]

JOB = "govpipe"


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


def _binary() -> str:
    path = shutil.which("prometheus")
    if path is None:
        raise ServiceError("prometheus not found on PATH: install the Debian package "
                           "prometheus (scripts/test does)")
    return path


class Prometheus(ServiceProcess):
    """One Prometheus server process; ``start``/``stop``/``close`` are safe to repeat."""

    name = "Prometheus"
    stop_timeout_s = 10.0

    def __init__(self, targets: Sequence[str] = (), *, rule_files: Sequence[Path] = (),
                 scrape_interval_s: float = 1.0, startup_timeout_s: float = 30.0,
                 scrape_options: Mapping[str, Any] | None = None) -> None:
        """Prepare (not start) a server scraping ``targets`` (HOST:PORT; ``set_targets``
        changes them) and evaluating ``rule_files``, both every ``scrape_interval_s``.
        ``scrape_options`` go into the scrape job as they are, e.g. ``{"scheme": "https",
        "tls_config": {"ca_file": ...}, "basic_auth": {...}}``."""
        super().__init__("govpipe-prometheus-", "prometheus.log", startup_timeout_s)
        self._targets = list(targets)
        self._rule_files = [path.resolve() for path in rule_files]
        self._interval = f"{int(scrape_interval_s * 1000)}ms"
        self._scrape_options = dict(scrape_options or {})
        (self.port,) = free_ports(1)
        self._targets_path = self.work_dir / "targets.json"

    @property
    def url(self) -> str:
        """Base URL of the web API, ``http://127.0.0.1:PORT``."""
        return f"http://127.0.0.1:{self.port}"

    def set_targets(self, targets: Sequence[str], **labels: str) -> None:
        """Scrape exactly ``targets`` (HOST:PORT) from now on, with job="govpipe" + labels.

        Written atomically: file discovery never sees a half-written file.
        """
        self._targets = list(targets)
        groups = [{"targets": self._targets, "labels": labels}] if targets else []
        partial = self._targets_path.with_suffix(".tmp")
        partial.write_text(json.dumps(groups))
        os.replace(partial, self._targets_path)

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
                **self._scrape_options,
            }],
        }
        # JSON is YAML: no YAML library needed to write Prometheus's config.
        (self.work_dir / "prometheus.yml").write_text(json.dumps(config, indent=2))

    def _prepare(self) -> None:
        self._write_config()

    def _command(self) -> list[str]:
        return [
            _binary(),
            f"--config.file={self.work_dir / 'prometheus.yml'}",
            f"--storage.tsdb.path={self.work_dir / 'data'}",
            f"--web.listen-address=127.0.0.1:{self.port}",
            "--log.level=warn",
        ]

    def _is_ready(self, log_offset: int) -> bool:
        return self._ready()

    def _where(self) -> str:
        return f"({self.url})"

    def _ready(self) -> bool:
        try:
            with urllib.request.urlopen(self.url + "/-/ready", timeout=1) as response:
                return int(response.status) == 200
        except (urllib.error.URLError, OSError):
            return False
