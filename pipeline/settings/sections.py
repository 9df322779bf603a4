"""The sections of the config whose keys stand alone: the source, CloudEvents, signing,
dead-letter, the HTTP server, detectors, shutdown and logging. The Kafka connection and the
sinks have modules of their own; rules across sections live with `Settings`."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from pipeline.cloudevents.attributes import is_uri_reference
from pipeline.settings.base import StrictModel
from pipeline.signing.signers import canonical_alg


class SourceSettings(StrictModel):
    kind: Literal["kafka", "stdin", "file"] = "stdin"
    topic: str = Field("governance.events", min_length=1)
    group_id: str = Field("govpipe", min_length=1)
    path: Path | None = None
    max_event_bytes: int = Field(1_048_576, ge=64)
    require_signature: bool = False
    inbound_key_file: Path | None = None
    replay_window_s: float = Field(300.0, gt=0)
    # 5,000 signed records/s over the default window is 1.5 million live nonces.
    nonce_capacity: int = Field(2_000_000, ge=1)
    nonce_sender_share: float = Field(0.8, gt=0, le=1)
    commit_interval_s: float = Field(2.0, gt=0)
    # The Kafka consumer: where a new group starts, what it reads, how it stays a member.
    auto_offset_reset: Literal["earliest", "latest"] = "earliest"
    # read_committed: records of aborted transactions are never read, so never signed.
    isolation_level: Literal["read_committed", "read_uncommitted"] = "read_committed"
    session_timeout_ms: int = Field(10_000, ge=1_000)
    heartbeat_interval_ms: int = Field(3_000, ge=100)
    max_poll_interval_ms: int = Field(300_000, ge=1_000)
    fetch_max_bytes: int = Field(52_428_800, ge=1_024)
    # Unset: 1 MiB, or max_event_bytes plus room for the record's overhead if larger.
    max_partition_fetch_bytes: int | None = Field(None, ge=1_024)

    @model_validator(mode="after")
    def _file_needs_path(self) -> SourceSettings:
        if self.kind == "file" and self.path is None:
            raise ValueError("path: required when kind = \"file\"")
        return self


class CloudEventsSettings(StrictModel):
    source: str = ""

    @field_validator("source")
    @classmethod
    def _a_uri_reference(cls, value: str) -> str:
        # Checked here, not per event: a bad one would otherwise refuse every event.
        if value and not is_uri_reference(value):
            raise ValueError("not a URI-reference (RFC 3986), as a CloudEvent source must be")
        return value


class SigningSettings(StrictModel):
    alg: Literal["HMAC-SHA256", "Ed25519"] = "HMAC-SHA256"
    key_file: Path | None = None
    key_id: str | None = None

    @field_validator("alg", mode="before")
    @classmethod
    def _alg_in_any_case(cls, value: Any) -> Any:
        # "ed25519" as keygen --alg spells it; an unknown name is left to the type's message.
        return (canonical_alg(value) or value) if isinstance(value, str) else value


class DeadLetterSettings(StrictModel):
    kind: Literal["kafka", "file"] | None = None
    topic: str = Field("governance.events.dlq", min_length=1)
    path: Path = Path("deadletter")
    # Entries waiting for a write that keeps failing; past it the source stops reading.
    max_pending: int = Field(10_000, ge=1)
    # kind = "file": the most bytes the entry files may hold together; at the cap the
    # source stops reading until room is made.
    max_bytes: int = Field(1_073_741_824, ge=4096)


class ServerSettings(StrictModel):
    listen: str = "127.0.0.1:9464"
    # A client gets this long for its request head (TLS handshake included), then for
    # its body, then to take the answer; past it the connection is closed.
    read_header_timeout_s: float = Field(10.0, gt=0)
    read_body_timeout_s: float = Field(10.0, gt=0)
    write_timeout_s: float = Field(10.0, gt=0)
    max_connections: int = Field(64, ge=1)  # more are closed as soon as they are accepted
    # Of those, the most one peer address may hold, so one client cannot take them all
    # (and fail the liveness probes).
    max_connections_per_peer: int = Field(16, ge=1)
    web_config_file: Path | None = None  # TLS and basic auth (exporter-toolkit format)

    @field_validator("listen")
    @classmethod
    def _host_port(cls, value: str) -> str:
        host, sep, port = value.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
            raise ValueError("expected HOST:PORT, e.g. 127.0.0.1:9464")
        return value

    @property
    def host(self) -> str:
        return self.listen.rpartition(":")[0].strip("[]")

    @property
    def port(self) -> int:
        return int(self.listen.rpartition(":")[2])


class ToolPoisoningSettings(StrictModel):
    enabled: bool = True


class DetectorsSettings(StrictModel):
    tool_poisoning: ToolPoisoningSettings = ToolPoisoningSettings()


class ShutdownSettings(StrictModel):
    timeout_s: float = Field(30.0, gt=0)


class LogSettings(StrictModel):
    level: Literal["debug", "info", "warning", "error"] = "info"
