"""OTLP/gRPC transport: the SDK's gRPC log exporter, sent pre-encoded requests.

A client interceptor records the status code. INVALID_ARGUMENT, NOT_FOUND, ALREADY_EXISTS,
PERMISSION_DENIED, UNAUTHENTICATED, FAILED_PRECONDITION, UNIMPLEMENTED, and
RESOURCE_EXHAUSTED without RetryInfo (the OTLP rule) are non-retriable; everything else (no
answer, UNAVAILABLE, DEADLINE_EXCEEDED…) is retriable.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast
from urllib.parse import urlsplit

import grpc
from opentelemetry.exporter.otlp.proto.grpc._log_exporter import (
    OTLPLogExporter as GrpcLogExporter,
)
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceResponse
from opentelemetry.sdk._logs.export import LogRecordExportResult

from sinks.base import SinkError
from sinks.otlp.options import OtlpOptions
from sinks.otlp.transport import export_error

__all__ = ["GrpcTransport"]

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
_EXPORT_METHOD = "/opentelemetry.proto.collector.logs.v1.LogsService/Export"


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


class GrpcTransport:
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
        return export_error("OTLP/gRPC", code.name if code is not None else "no status",
                            refused=refused)
