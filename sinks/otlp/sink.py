"""OTLP logs sink: one log record per signed CloudEvent, over gRPC or HTTP/protobuf.

The opentelemetry-exporter-otlp log exporters are called directly (no LoggerProvider, no
batch processor), so every batch's outcome is known. They are blocking, so each export runs
in a worker thread. The sink hands them a request it encoded itself (``sinks.otlp.records``)
rather than SDK log records: the exporters keep the transport, TLS, headers, compression and
their retries; the SDK's per-attribute encoding, the costliest part, is skipped.

Failure classes. Both exporters retry transient failures internally (up to 6 attempts,
backoff 1 s, 2 s, 4 s… with ±20 % jitter) but stop as soon as the next wait would pass
``timeout_s`` from the start of the export, so a failed batch is reported within about
``timeout_s``; the dispatcher's own retry and breaker take over from there. The exporters
only return SUCCESS/FAILURE, so the sink watches the transport to tell why:
- HTTP: a response hook on the exporter's ``requests`` session records the status. A 4xx
  other than 408/429 means the collector refuses the request (bad path, auth, too large):
  ``SinkError(retriable=False, reason="export_rejected")``.
- gRPC: a client interceptor records the status code. INVALID_ARGUMENT, NOT_FOUND,
  ALREADY_EXISTS, PERMISSION_DENIED, UNAUTHENTICATED, FAILED_PRECONDITION, UNIMPLEMENTED,
  and RESOURCE_EXHAUSTED without RetryInfo (the OTLP rule) are non-retriable.
- Everything else (no answer, timeouts, 5xx, UNAVAILABLE…) is
  ``SinkError(retriable=True, reason="export_failed")``.
Header values may carry credentials; they are never logged or put in errors.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol, cast
from urllib.parse import urlsplit, urlunsplit

import grpc
import requests
from opentelemetry.exporter.otlp.proto.grpc._log_exporter import (
    OTLPLogExporter as GrpcLogExporter,
)
from opentelemetry.exporter.otlp.proto.http import Compression as HttpCompression
from opentelemetry.exporter.otlp.proto.http._log_exporter import (
    OTLPLogExporter as HttpLogExporter,
)
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceResponse
from opentelemetry.sdk._logs.export import LogRecordExportResult

from pipeline.model import SignedEvent
from sinks.base import SinkError
from sinks.otlp.records import encode_log_record, logs_request

__all__ = ["OtlpOptions", "OtlpSink"]

_NON_RETRIABLE_GRPC = frozenset({
    grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.ALREADY_EXISTS, grpc.StatusCode.PERMISSION_DENIED,
    grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.UNIMPLEMENTED,
})  # fmt: skip
# The OTLP spec's retryable set. RESOURCE_EXHAUSTED is left out so the exporter does not spin
# on "message larger than max" until its deadline; the sink decides on RetryInfo instead.
_RETRYABLE_GRPC = frozenset({
    grpc.StatusCode.CANCELLED, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.ABORTED,
    grpc.StatusCode.OUT_OF_RANGE, grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DATA_LOSS,
})  # fmt: skip
_RETRY_INFO_KEY = "google.rpc.retryinfo-bin"
_RETRIABLE_4XX = frozenset({408, 429})
_LOGS_PATH = "/v1/logs"
_EXPORT_METHOD = "/opentelemetry.proto.collector.logs.v1.LogsService/Export"


@dataclass(frozen=True)
class OtlpOptions:
    """Where and how to export; built by the daemon wiring from ``[sinks.otlp]``."""

    endpoint: str = "http://127.0.0.1:4317"
    protocol: Literal["grpc", "http/protobuf"] = "grpc"
    headers: Mapping[str, str] = field(default_factory=dict, repr=False)  # may be secrets
    timeout_s: float = 10.0
    compression: Literal["none", "gzip"] = "none"
    insecure: bool = True
    ca_file: Path | None = None
    client_cert_file: Path | None = None
    client_key_file: Path | None = None


class _Transport(Protocol):
    def export(self, payload: bytes, count: int) -> bool:
        """Send one serialized ExportLogsServiceRequest of ``count`` records; True when the
        collector took it."""
        ...

    def shutdown(self) -> None: ...

    def reset(self) -> None: ...

    def failure(self) -> SinkError: ...


class OtlpSink:
    """Exports each batch as one OTLP logs request; see the module docstring for failures."""

    def __init__(self, options: OtlpOptions, name: str = "otlp") -> None:
        self.name = name
        self._transport: _Transport = (
            _GrpcTransport(options) if options.protocol == "grpc" else _HttpTransport(options)
        )
        # One export at a time: the transport remembers the last status for classification.
        self._lock = asyncio.Lock()
        self._closed = False

    async def send(self, batch: Sequence[SignedEvent]) -> None:
        """Export ``batch``; raise SinkError (retriable or not) when it is not delivered."""
        if self._closed:
            raise SinkError("otlp sink is closed", retriable=False, reason="closed")
        if not batch:
            return
        observed_ns = time.time_ns()
        payload = logs_request([encode_log_record(event, observed_ns) for event in batch])
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


# --------------------------------------------------------------------------- HTTP


def logs_url(endpoint: str) -> str:
    """The OTLP/HTTP logs URL: the endpoint with ``/v1/logs`` appended unless already there."""
    parts = urlsplit(endpoint)
    path = parts.path.rstrip("/")
    if not path.endswith(_LOGS_PATH):
        path += _LOGS_PATH
    return urlunsplit(parts._replace(path=path))


class _Session(requests.Session):
    """A session whose explicit CA bundle beats REQUESTS_CA_BUNDLE / CURL_CA_BUNDLE.

    requests lets those variables override ``session.verify`` (requests issue 3829), which
    would silently ignore ``ca_file`` on any machine that sets them. Proxies and the rest of
    the environment still apply.
    """

    def merge_environment_settings(self, url: Any, proxies: Any, stream: Any, verify: Any,
                                   cert: Any) -> Any:
        settings = super().merge_environment_settings(url, proxies, stream, verify, cert)
        if isinstance(self.verify, str):
            settings["verify"] = self.verify
        return settings


class _SerializedHttpExporter(HttpLogExporter):
    """The SDK HTTP log exporter, given request bytes instead of SDK log records.

    ``export`` itself would encode SDK records; this sends through the exporter's own
    (private) HTTP client, which does the retries, compression and headers. The contract
    tests over HTTP fail if a later SDK renames it.
    """

    def export_serialized(self, payload: bytes) -> bool:
        if self._shutdown:
            return False
        return bool(self._client.export(payload).success)


class _HttpTransport:
    def __init__(self, options: OtlpOptions) -> None:
        self.status: int | None = None
        session = _Session()
        session.hooks["response"].append(self._record)
        client_cert = str(options.client_cert_file) if options.client_cert_file else None
        client_key = str(options.client_key_file) if options.client_key_file else None
        self._exporter = _SerializedHttpExporter(
            endpoint=logs_url(options.endpoint),
            certificate_file=str(options.ca_file) if options.ca_file else None,
            client_certificate_file=client_cert,
            client_key_file=client_key,
            headers=dict(options.headers),
            timeout=options.timeout_s,
            compression=(HttpCompression.Gzip if options.compression == "gzip"
                         else HttpCompression.NoCompression),
            session=session,
            # No client-side size cap: the collector's answer (413) says what it accepts.
            max_request_size=0,
        )

    def _record(self, response: requests.Response, *args: object, **kwargs: object) -> None:
        self.status = response.status_code

    def export(self, payload: bytes, count: int) -> bool:
        return self._exporter.export_serialized(payload)

    def shutdown(self) -> None:
        self._exporter.shutdown()  # type: ignore[no-untyped-call]

    def reset(self) -> None:
        self.status = None

    def failure(self) -> SinkError:
        status = self.status
        if status is not None and 400 <= status < 500 and status not in _RETRIABLE_4XX:
            return SinkError(f"OTLP/HTTP export refused by the collector: HTTP {status}",
                             retriable=False, reason="export_rejected")
        detail = f"HTTP {status}" if status is not None else "no response (refused, timed out…)"
        return SinkError(f"OTLP/HTTP export failed: {detail}", retriable=True,
                         reason="export_failed")


# --------------------------------------------------------------------------- gRPC


class _StatusRecorder(grpc.UnaryUnaryClientInterceptor):
    """Remembers the status code (and whether RetryInfo came back) of the last call."""

    def __init__(self) -> None:
        self.code: grpc.StatusCode | None = None
        self.retry_info = False

    def intercept_unary_unary(
        self, continuation: Callable[[Any, Any], Any], client_call_details: Any, request: Any
    ) -> Any:
        outcome = continuation(client_call_details, request)
        self.code = outcome.code()
        trailing = outcome.trailing_metadata() or ()
        self.retry_info = any(item[0] == _RETRY_INFO_KEY for item in trailing)
        return outcome


class _RecordingGrpcExporter(GrpcLogExporter):
    """The SDK gRPC log exporter, given a request instead of SDK log records (through the
    mixin's ``_translate_data``), with a status-recording interceptor on its channel.

    The exporter rebuilds its channel after UNAVAILABLE, so the interceptor is attached in
    the (private) method it rebuilds with. The contract tests' non-retriable gRPC case
    fails if a later SDK renames it.
    """

    def __init__(self, recorder: _StatusRecorder, **kwargs: Any) -> None:
        self._recorder = recorder
        super().__init__(**kwargs)

    # The mixin's hooks: what `export` is given is already the serialized request (and a
    # record count), which the stub below sends as it is.
    def _translate_data(self, data: Any) -> Any:
        return cast(_Serialized, data).payload

    def _count_data(self, data: Any) -> int:
        return cast(_Serialized, data).count

    def _initialize_channel_and_stub(self) -> None:
        super()._initialize_channel_and_stub()  # type: ignore[no-untyped-call]
        # The SDK declares both attributes as None-typed; they hold a channel and a stub.
        channel = grpc.intercept_channel(cast(grpc.Channel, self._channel), self._recorder)
        self._channel = channel  # type: ignore[assignment]
        self._client = _BytesLogsStub(channel)  # type: ignore[assignment]


@dataclass(frozen=True, slots=True)
class _Serialized:
    payload: bytes
    count: int


class _BytesLogsStub:
    """The generated ``LogsServiceStub`` with the request serializer left out: the request
    is already wire bytes, so it is neither parsed into a message nor serialized again."""

    def __init__(self, channel: grpc.Channel) -> None:
        self.Export: grpc.UnaryUnaryMultiCallable[bytes, Any] = channel.unary_unary(
            _EXPORT_METHOD, request_serializer=None,
            response_deserializer=ExportLogsServiceResponse.FromString)


def _grpc_credentials(options: OtlpOptions) -> grpc.ChannelCredentials | None:
    if options.insecure and urlsplit(options.endpoint).scheme != "https":
        return None
    return grpc.ssl_channel_credentials(
        root_certificates=options.ca_file.read_bytes() if options.ca_file else None,
        private_key=options.client_key_file.read_bytes() if options.client_key_file else None,
        certificate_chain=(options.client_cert_file.read_bytes()
                           if options.client_cert_file else None),
    )


class _GrpcTransport:
    def __init__(self, options: OtlpOptions) -> None:
        self._recorder = _StatusRecorder()
        credentials = _grpc_credentials(options)
        self._exporter = _RecordingGrpcExporter(
            self._recorder,
            endpoint=options.endpoint,
            insecure=credentials is None,
            credentials=credentials,
            # gRPC metadata keys must be lowercase.
            headers={key.lower(): value for key, value in options.headers.items()},
            timeout=options.timeout_s,
            compression=(grpc.Compression.Gzip if options.compression == "gzip"
                         else grpc.Compression.NoCompression),
            retryable_error_codes=_RETRYABLE_GRPC,
        )

    def export(self, payload: bytes, count: int) -> bool:
        result = self._exporter.export(_Serialized(payload, count))  # type: ignore[arg-type]
        return result is LogRecordExportResult.SUCCESS

    def shutdown(self) -> None:
        self._exporter.shutdown()

    def reset(self) -> None:
        self._recorder.code = None
        self._recorder.retry_info = False

    def failure(self) -> SinkError:
        code = self._recorder.code
        refused = code in _NON_RETRIABLE_GRPC or (
            code is grpc.StatusCode.RESOURCE_EXHAUSTED and not self._recorder.retry_info
        )
        name = code.name if code is not None else "no status"
        if refused:
            return SinkError(f"OTLP/gRPC export refused by the collector: {name}",
                             retriable=False, reason="export_rejected")
        return SinkError(f"OTLP/gRPC export failed: {name}", retriable=True,
                         reason="export_failed")
