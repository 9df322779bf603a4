"""OTLP logs sink: one log record per signed CloudEvent, over gRPC or HTTP/protobuf.

The opentelemetry-exporter-otlp log exporters are called directly (no LoggerProvider, no
batch processor), so every batch's outcome is known. They are blocking, so each export runs
in a worker thread. The sink hands them a request it encoded itself (``sinks.otlp.records``)
rather than SDK log records: the exporters keep the transport, TLS, headers, compression and
their retries; the SDK's per-attribute encoding, the costliest part, is skipped.

Failures. Both exporters retry transient failures internally (up to 6 attempts, backoff
1 s, 2 s, 4 s… with ±20 % jitter) but stop as soon as the next wait would pass ``timeout_s``
from the start of the export, so a failed batch is reported within about ``timeout_s``; the
dispatcher's own retry and breaker take over from there. Whether a failure is retriable is
the transport's call (``sinks.otlp.grpc_transport``, ``sinks.otlp.http_transport``).
Header values may carry credentials; they are never logged or put in errors.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence

from pipeline.model import SignedEvent
from sinks.base import closed_error
from sinks.otlp.grpc_transport import GrpcTransport
from sinks.otlp.http_transport import HttpTransport
from sinks.otlp.options import OtlpOptions
from sinks.otlp.records import ServiceIdentity, encode_log_record, logs_request
from sinks.otlp.transport import Transport

__all__ = ["OtlpOptions", "OtlpSink"]


class OtlpSink:
    """Exports each batch as one OTLP logs request; see the module docstring for failures."""

    def __init__(self, options: OtlpOptions, name: str = "otlp") -> None:
        self.name = name
        self._transport: Transport = (
            GrpcTransport(options) if options.protocol == "grpc" else HttpTransport(options)
        )
        # One export at a time: the transport remembers the last status for classification.
        self._lock = asyncio.Lock()
        self._closed = False
        self._identity = ServiceIdentity(options.service_version, options.service_instance_id)

    async def send(self, batch: Sequence[SignedEvent]) -> None:
        """Export ``batch``; raise SinkError (retriable or not) when it is not delivered."""
        if self._closed:
            raise closed_error("otlp")
        if not batch:
            return
        observed_ns = time.time_ns()
        payload = logs_request([encode_log_record(event, observed_ns) for event in batch],
                               self._identity)
        async with self._lock:
            if not await asyncio.to_thread(self._export, payload, len(batch)):
                raise self._transport.failure()

    def _export(self, payload: bytes, count: int) -> bool:
        self._transport.reset()
        return self._transport.export(payload, count)

    async def aclose(self) -> None:
        """Shut the exporter down (ends an export's retry wait early); safe to call twice."""
        if self._closed:
            return
        self._closed = True
        await asyncio.to_thread(self._transport.shutdown)
