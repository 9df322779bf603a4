"""OTLP sink: signed CloudEvents as OpenTelemetry log records, over gRPC or HTTP."""

from sinks.otlp.options import OtlpOptions
from sinks.otlp.sink import OtlpSink

__all__ = ["OtlpOptions", "OtlpSink"]
