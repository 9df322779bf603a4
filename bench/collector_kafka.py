"""The OpenTelemetry Collector between the same Kafka topics, for bench scenarios p and q.

The test Collector (tests/support/infra/collector_build.py: contrib 0.165.1) runs
kafkareceiver (logs, ``encoding: raw``, from the earliest offset) → batch → [transform] →
kafkaexporter (acks all). Its first read comes from its own metrics
(``otelcol_kafka_receiver_records``, a Prometheus pull endpoint on a free port), as
govpipe's comes from ``/metrics``.

- ``p`` copies each record value as it is (``raw`` out): the Collector's floor.
- ``q`` does work comparable to govpipe's: parses the JSON body into attributes, sets
  the CloudEvent attributes, runs one regex over the text (a tool-poisoning pattern),
  hashes it with SHA256 (a stand-in for the signature) and writes OTLP/JSON, one record
  per event (``partition_logs_by_trace_id`` with the event id as trace id).
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from bench.procs import Topics, _Process, _spawn
from tests.support.infra.collector import READY_LINE
from tests.support.infra.collector_build import ensure_collector
from tests.support.infra.process import free_ports

_POLL_S = 0.02
_RECORDS_METRIC = "otelcol_kafka_receiver_records"

# OTTL, log context. The body arrives as bytes (raw encoding).
_POISON = (r"(?i)(<\s*(important|system|instructions?)\b|\brm\s+-[a-z]*r"
           r"|(curl|wget)\b[^|\n]*\|\s*(ba|z)?sh\b)")
_WHERE_POISONED = f'where IsMatch(log.cache["raw"], {json.dumps(_POISON)})'
TRANSFORM_STATEMENTS = [
    'set(log.cache["raw"], Decode(log.body, "utf-8"))',
    'merge_maps(log.attributes, ParseJSON(log.cache["raw"]), "upsert")',
    'set(log.attributes["specversion"], "1.0")',
    'set(log.attributes["id"], log.attributes["event_id"])',
    'set(log.attributes["type"], Concat(["ai.agentos.", log.attributes["kind"]], ""))',
    'set(log.attributes["source"], Concat(["/agent-os/agent/", log.attributes["agent_id"]], ""))',
    'set(log.attributes["time"], log.attributes["occurred_at"])',
    'set(log.attributes["datacontenttype"], "application/json")',
    'set(log.attributes["partitionkey"], log.attributes["agent_id"])',
    f'set(log.attributes["agtalerts"], "tool_poisoning") {_WHERE_POISONED}',
    'set(log.attributes["agtsignature"], SHA256(log.cache["raw"]))',
    'set(log.trace_id.string, log.attributes["event_id"])',
]  # fmt: skip


def collector_config(topics: Topics, metrics_port: int, transform: bool) -> dict[str, Any]:
    """The Collector's config for scenario p (``transform=False``) or q."""
    processors: dict[str, Any] = {"batch": {}}
    logs_out: dict[str, Any] = {"topic": topics.output, "encoding": "raw"}
    exporter: dict[str, Any] = {"brokers": [topics.bootstrap], "logs": logs_out,
                                "producer": {"required_acks": -1}}
    if transform:
        processors["transform"] = {"error_mode": "ignore",
                                   "log_statements": [{"statements": TRANSFORM_STATEMENTS}]}
        logs_out["encoding"] = "otlp_json"
        exporter["partition_logs_by_trace_id"] = True
    return {
        "receivers": {"kafka": {
            "brokers": [topics.bootstrap], "group_id": topics.group,
            "initial_offset": "earliest",
            "logs": {"topics": [topics.source], "encoding": "raw"}}},
        "processors": processors,
        "exporters": {"kafka": exporter},
        "service": {
            "telemetry": {"logs": {"level": "info"}, "metrics": {"level": "normal", "readers": [
                {"pull": {"exporter": {"prometheus": {
                    "host": "127.0.0.1", "port": metrics_port}}}}]}},
            "pipelines": {"logs": {"receivers": ["kafka"], "processors": list(processors),
                                   "exporters": ["kafka"]}},
        },
    }  # fmt: skip


@dataclass
class CollectorWorker(_Process):
    """The Collector as a scenario's process; first read from its own metrics."""

    metrics_port: int = field(default=0)

    @classmethod
    def start(cls, topics: Topics, work: Path, transform: bool) -> CollectorWorker:
        """Spawn the Collector between ``topics``, logs and config in ``work``."""
        (port,) = free_ports(1)
        config = work / "config.yaml"
        # JSON is YAML, and needs no quoting rules.
        config.write_text(json.dumps(collector_config(topics, port, transform), indent=2))
        process = _spawn([str(ensure_collector()), f"--config={config}"], dict(os.environ),
                         work / "collector.log", None)
        return cls(process.proc, process.log, port)

    async def wait_ready(self) -> None:
        while READY_LINE not in self.log.read_text(errors="replace"):
            self.check_alive()
            await asyncio.sleep(_POLL_S)

    async def _records_read(self) -> float:
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        try:
            async with aiohttp.ClientSession() as http, http.get(url) as response:
                text = await response.text()
        except aiohttp.ClientError:
            return 0.0  # not listening yet
        return sum(float(line.rpartition(" ")[2]) for line in text.splitlines()
                   if line.startswith(_RECORDS_METRIC))

    async def first_consume(self) -> float:
        while True:
            self.check_alive()
            polled = time.time()
            if await self._records_read() > 0:
                return polled
            await asyncio.sleep(_POLL_S)
