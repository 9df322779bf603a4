"""The `[sinks.*]` tables: what every sink has (queue, retries, breaker) and each one's own."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, field_validator, model_validator

from pipeline.settings.base import StrictModel
from pipeline.settings.kafka import KafkaConnection


class RetrySettings(StrictModel):
    max_attempts: int = Field(5, ge=1)
    initial_backoff_s: float = Field(0.2, gt=0)
    max_backoff_s: float = Field(10.0, gt=0)


class BreakerSettings(StrictModel):
    failure_threshold: int = Field(5, ge=1)
    cooldown_s: float = Field(30.0, gt=0)
    success_threshold: int = Field(2, ge=1)


class SinkSettings(StrictModel):
    enabled: bool = False
    queue_size: int = Field(2_000, ge=1)
    batch_size: int = Field(500, ge=1)
    on_full: Literal["block", "drop"] = "block"
    on_open: Literal["deadletter", "block", "drop"] = "deadletter"
    retry: RetrySettings = RetrySettings()
    breaker: BreakerSettings = BreakerSettings()


class StdoutSinkSettings(SinkSettings):
    enabled: bool = True


OTLP_DEFAULT_ENDPOINTS = {"grpc": "http://127.0.0.1:4317", "http/protobuf": "http://127.0.0.1:4318"}


class OtlpSinkSettings(SinkSettings):
    # Unset: the OTLP default port of the protocol (4317 gRPC, 4318 HTTP), on loopback.
    endpoint: str = OTLP_DEFAULT_ENDPOINTS["grpc"]
    protocol: Literal["grpc", "http/protobuf"] = "grpc"
    headers: dict[str, SecretStr] = Field(default_factory=dict)  # may carry credentials
    timeout_s: float = Field(10.0, gt=0)
    compression: Literal["none", "gzip"] = "none"
    # Unset: TLS exactly when the endpoint is https://. false: TLS on a scheme-less gRPC
    # endpoint too. true: plaintext (refused with any of the TLS files below).
    insecure: bool | None = None
    ca_file: Path | None = None           # PEM CA bundle to verify the collector (TLS)
    client_cert_file: Path | None = None  # PEM client certificate (mutual TLS)
    client_key_file: Path | None = None   # PEM client key (mutual TLS)
    # The resource's service.instance.id. Unset: a random UUID, the same for the whole run.
    service_instance_id: str | None = Field(None, min_length=1)

    @model_validator(mode="before")
    @classmethod
    def _endpoint_for_protocol(cls, values: Any) -> Any:
        if isinstance(values, dict) and values.get("endpoint") is None:
            protocol = values.get("protocol", "grpc")
            # A protocol that is not a known string is reported by its own validation.
            default = OTLP_DEFAULT_ENDPOINTS.get(protocol, "") if isinstance(protocol, str) \
                else ""
            values = {**values, "endpoint": default}
        return values

    @model_validator(mode="after")
    def _tls_files_need_tls(self) -> OtlpSinkSettings:
        # A CA or client certificate on a plaintext connection would be silently unused,
        # and the headers (bearer tokens) would travel in cleartext.
        files = ("ca_file", "client_cert_file", "client_key_file")
        for key in (key for key in files if getattr(self, key) is not None):
            if self.insecure:
                raise ValueError(f"{key}: TLS material, but insecure = true sends in "
                                 "plaintext; remove one of the two")
            if not self.uses_tls:
                raise ValueError(f"{key}: TLS material, but the endpoint {self.endpoint} is "
                                 "plaintext; use https:// (or insecure = false for a gRPC "
                                 "host:port)")
        return self

    @property
    def uses_tls(self) -> bool:
        """Whether exports go over TLS: an https:// endpoint, or insecure = false on a gRPC
        endpoint without a scheme."""
        scheme = urlsplit(self.endpoint).scheme
        if scheme == "https":
            return True
        return self.protocol == "grpc" and self.insecure is False and scheme != "http"

    @field_validator("headers", mode="before")
    @classmethod
    def _headers_from_text(cls, value: Any) -> Any:
        # From the environment: "k1=v1,k2=v2", the OTEL_EXPORTER_OTLP_HEADERS form.
        if isinstance(value, str):
            pairs = [item.split("=", 1) for item in value.split(",") if item.strip()]
            if any(len(pair) != 2 for pair in pairs):
                raise ValueError("expected k1=v1,k2=v2")
            return {k.strip(): v.strip() for k, v in pairs}
        return value


class KafkaSinkSettings(SinkSettings):
    # Another cluster than [kafka]'s: a table of the same keys. Unset: [kafka].
    connection: KafkaConnection | None = None
    topic: str = Field("governance.cloudevents", min_length=1)
    compression_type: Literal["none", "gzip", "snappy", "lz4", "zstd"] = "none"
    linger_ms: int = Field(0, ge=0)  # how long a batch waits for more records
    content_mode: Literal["structured", "binary"] = "structured"
    timeout_s: float = Field(30.0, gt=0)  # metadata wait and delivery deadline per record
    # Bytes per partition in one produce request (halved if a topic refuses it as too large).
    record_batch_bytes: int = Field(1_048_576, ge=16_384)
    # Output, Kafka dead-letter entries and the source offsets in one transaction per input
    # partition, for read_committed readers (Kafka source and dead-letter, same cluster).
    exactly_once: bool = False


class SinksSettings(StrictModel):
    stdout: StdoutSinkSettings = StdoutSinkSettings()
    otlp: OtlpSinkSettings = OtlpSinkSettings()
    kafka: KafkaSinkSettings = KafkaSinkSettings()

    def enabled_by_name(self) -> dict[str, SinkSettings]:
        """The enabled sinks' settings, by name."""
        sinks: dict[str, SinkSettings] = {name: getattr(self, name)
                                          for name in type(self).model_fields}
        return {name: sink for name, sink in sinks.items() if sink.enabled}
