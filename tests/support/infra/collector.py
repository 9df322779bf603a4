"""A real OpenTelemetry Collector (OTLP receiver → file exporter) for tests and benchmarks.

The binary is built once per machine (:mod:`tests.support.infra.collector_build`). Each
:class:`Collector` lives in its own temp dir, listens for OTLP over gRPC and HTTP on free
127.0.0.1 ports, writes every export request it receives as one JSON line to a file, and is
stopped by its process id.

Usage from a script::

    with Collector() as collector:
        ...  # send OTLP logs to collector.grpc_endpoint / collector.http_endpoint
        records = collector.wait_for_log_records(10)

``python -m tests.support.infra.collector`` builds the binary and prints its path (CI cache
warm-up).
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.support.infra.collector_build import COLLECTOR_VERSION, ensure_collector
from tests.support.infra.process import ServiceError, ServiceProcess, free_ports, port_open

__all__ = [
    "COLLECTOR_VERSION",
    "Collector",
    "LogRecord",
    "ServerTls",
    "ServiceError",
    "ensure_collector",
]

READY_LINE = "Everything is ready. Begin running and processing data."
_POLL_S = 0.05


@dataclass(frozen=True, slots=True)
class ServerTls:
    """PEM files for the receiver's TLS; ``client_ca_file`` makes it require client certs."""

    cert_file: Path
    key_file: Path
    client_ca_file: Path | None = None

    def receiver_config(self) -> dict[str, str]:
        """The ``tls`` block of an OTLP receiver protocol."""
        config = {"cert_file": str(self.cert_file), "key_file": str(self.key_file)}
        if self.client_ca_file is not None:
            config["client_ca_file"] = str(self.client_ca_file)
        return config


@dataclass(frozen=True, slots=True)
class LogRecord:
    """One OTLP log record as the file exporter wrote it (OTLP/JSON), with its resource."""

    resource: Mapping[str, Any]
    record: Mapping[str, Any]

    @property
    def body(self) -> Any:
        """The body's value (``stringValue`` for govpipe's records)."""
        return _any_value(self.record.get("body", {}))

    @property
    def attributes(self) -> dict[str, Any]:
        """The record attributes as a plain dict."""
        return _key_values(self.record.get("attributes", []))

    @property
    def resource_attributes(self) -> dict[str, Any]:
        """The resource attributes as a plain dict."""
        return _key_values(self.resource.get("attributes", []))


def _any_value(value: Mapping[str, Any]) -> Any:
    # OTLP/JSON encodes 64-bit ints as strings; the tests compare after int().
    for kind in ("stringValue", "boolValue", "intValue", "doubleValue", "bytesValue"):
        if kind in value:
            return value[kind]
    if "arrayValue" in value:
        return [_any_value(v) for v in value["arrayValue"].get("values", [])]
    if "kvlistValue" in value:
        return _key_values(value["kvlistValue"].get("values", []))
    return None


def _key_values(items: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    return {item["key"]: _any_value(item.get("value", {})) for item in items}


class Collector(ServiceProcess):
    """One OpenTelemetry Collector process, in a temp dir, on 127.0.0.1.

    Ports and the output file are fixed at construction, so ``stop()`` then ``start()``
    (or ``restart()``) brings the same collector back on the same endpoints.
    """

    name = "OpenTelemetry Collector"
    poll_s = 0.05

    def __init__(
        self,
        *,
        binary: Path | None = None,
        startup_timeout_s: float = 60.0,
        accept_logs: bool = True,
        tls: ServerTls | None = None,
    ) -> None:
        """Prepare (not start) a collector.

        ``accept_logs=False`` runs only a traces pipeline: the OTLP receiver then does not
        serve the logs service at all (gRPC UNIMPLEMENTED, HTTP 404), which is how a
        misconfigured peer that refuses every log export looks to a client. ``tls`` serves
        both protocols over TLS (endpoints become ``https://``).
        """
        super().__init__("govpipe-otelcol-", "collector.log", startup_timeout_s)
        self._binary = binary
        self._accept_logs = accept_logs
        self._tls = tls
        self.grpc_port, self.http_port = free_ports(2)
        self.output_path = self.work_dir / "logs.jsonl"

    @property
    def binary(self) -> Path:
        """The collector executable (built on first use)."""
        self._binary = self._binary or ensure_collector()
        return self._binary

    @property
    def grpc_endpoint(self) -> str:
        """OTLP/gRPC endpoint URL."""
        return f"{self._scheme}://127.0.0.1:{self.grpc_port}"

    @property
    def http_endpoint(self) -> str:
        """OTLP/HTTP base URL (the logs path is ``/v1/logs``)."""
        return f"{self._scheme}://127.0.0.1:{self.http_port}"

    @property
    def _scheme(self) -> str:
        return "http" if self._tls is None else "https"

    def log_records(self) -> list[LogRecord]:
        """Every log record the file exporter has written so far, in arrival order."""
        try:
            lines = self.output_path.read_text().splitlines()
        except FileNotFoundError:
            return []
        records: list[LogRecord] = []
        for line in lines:
            if not line.strip():
                continue
            try:
                request = json.loads(line)
            except json.JSONDecodeError:
                break  # a line still being flushed; the next poll reads it whole
            records.extend(_flatten(request))
        return records

    def wait_for_log_records(self, expected: int, timeout_s: float = 30.0) -> list[LogRecord]:
        """Poll the output until ``expected`` records arrived; return what is there at timeout."""
        deadline = time.monotonic() + timeout_s
        records = self.log_records()
        while len(records) < expected and time.monotonic() < deadline:
            # Polling: the file exporter flushes on its own interval; nothing to wait on.
            time.sleep(_POLL_S)
            records = self.log_records()
        return records

    def _write_config(self) -> None:
        pipelines = (
            {"logs": {"receivers": ["otlp"], "exporters": ["file/logs"]}}
            if self._accept_logs
            else {"traces": {"receivers": ["otlp"], "exporters": ["debug"]}}
        )
        protocols: dict[str, dict[str, Any]] = {
            "grpc": {"endpoint": f"127.0.0.1:{self.grpc_port}"},
            "http": {"endpoint": f"127.0.0.1:{self.http_port}"},
        }
        if self._tls is not None:
            for protocol in protocols.values():
                protocol["tls"] = self._tls.receiver_config()
        config = {
            "receivers": {"otlp": {"protocols": protocols}},
            "exporters": {
                # append: a restart (an outage test) must not truncate what arrived before.
                "file/logs": {
                    "path": str(self.output_path), "format": "json", "flush_interval": "100ms",
                    "append": True,
                },
                "debug": {"verbosity": "basic"},
            },
            "service": {
                # level none: no Prometheus endpoint on :8888 to collide between collectors.
                "telemetry": {"metrics": {"level": "none"}},
                "pipelines": pipelines,
            },
        }  # fmt: skip
        # JSON is YAML, and needs no quoting rules for paths.
        (self.work_dir / "config.yaml").write_text(json.dumps(config, indent=2))

    def _prepare(self) -> None:
        self._write_config()

    def _command(self) -> list[str]:
        return [str(self.binary), f"--config={self.work_dir / 'config.yaml'}"]

    def _is_ready(self, log_offset: int) -> bool:
        return self.logged_since(log_offset, READY_LINE) and all(
            port_open(port) for port in (self.grpc_port, self.http_port))


def _flatten(request: Mapping[str, Any]) -> list[LogRecord]:
    return [
        LogRecord(resource=resource_logs.get("resource", {}), record=record)
        for resource_logs in request.get("resourceLogs", [])
        for scope_logs in resource_logs.get("scopeLogs", [])
        for record in scope_logs.get("logRecords", [])
    ]


if __name__ == "__main__":
    # CI cache warm-up: build once, print where the binary is.
    print(ensure_collector())
