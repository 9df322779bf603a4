"""Settings: one TOML file plus GOVPIPE_<SECTION>__<KEY> environment overrides, validated
here and nowhere else, rules across keys included. A bad key or value, or keys that cannot
work together, raise `ConfigError` naming the key."""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

ENV_PREFIX = "GOVPIPE_"
# GOVPIPE_* variables that are not config overrides (key material, tool caches).
NOT_OVERRIDES = frozenset({"GOVPIPE_SIGNING_KEY", "GOVPIPE_CACHE"})


class ConfigError(Exception):
    """The configuration cannot be used; the message is one line naming the key."""


_BROKEN_RULE = "broken_rule"


def _broken_rule(key: str, problem: str) -> PydanticCustomError:
    """A rule across keys that the values break, reported under `key` (the one to change)."""
    return PydanticCustomError(_BROKEN_RULE, "{key}: {problem}", {"key": key, "problem": problem})


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RetrySettings(_Model):
    max_attempts: int = Field(5, ge=1)
    initial_backoff_s: float = Field(0.2, gt=0)
    max_backoff_s: float = Field(10.0, gt=0)


class BreakerSettings(_Model):
    failure_threshold: int = Field(5, ge=1)
    cooldown_s: float = Field(30.0, gt=0)
    success_threshold: int = Field(2, ge=1)


class SinkSettings(_Model):
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
    insecure: bool = True
    ca_file: Path | None = None           # PEM CA bundle to verify the collector (TLS)
    client_cert_file: Path | None = None  # PEM client certificate (mutual TLS)
    client_key_file: Path | None = None   # PEM client key (mutual TLS)

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
    bootstrap_servers: str | None = None
    topic: str = Field("governance.cloudevents", min_length=1)
    content_mode: Literal["structured", "binary"] = "structured"
    timeout_s: float = Field(30.0, gt=0)  # metadata wait and delivery deadline per record
    # Bytes per partition in one produce request (halved if a topic refuses it as too large).
    record_batch_bytes: int = Field(1_048_576, ge=16_384)


class SinksSettings(_Model):
    stdout: StdoutSinkSettings = StdoutSinkSettings()
    otlp: OtlpSinkSettings = OtlpSinkSettings()
    kafka: KafkaSinkSettings = KafkaSinkSettings()

    def enabled_by_name(self) -> dict[str, SinkSettings]:
        """The enabled sinks' settings, by name."""
        sinks: dict[str, SinkSettings] = {name: getattr(self, name)
                                          for name in type(self).model_fields}
        return {name: sink for name, sink in sinks.items() if sink.enabled}


class SourceSettings(_Model):
    kind: Literal["kafka", "stdin", "file"] = "stdin"
    bootstrap_servers: str = "127.0.0.1:9092"
    topic: str = Field("governance.events", min_length=1)
    group_id: str = Field("govpipe", min_length=1)
    path: Path | None = None
    max_event_bytes: int = Field(1_048_576, ge=64)
    require_signature: bool = False
    inbound_key_file: Path | None = None
    replay_window_s: float = Field(300.0, gt=0)
    nonce_capacity: int = Field(100_000, ge=1)
    commit_interval_s: float = Field(2.0, gt=0)

    @model_validator(mode="after")
    def _file_needs_path(self) -> SourceSettings:
        if self.kind == "file" and self.path is None:
            raise ValueError("path: required when kind = \"file\"")
        return self


class CloudEventsSettings(_Model):
    source: str = ""


class SigningSettings(_Model):
    alg: Literal["HMAC-SHA256", "Ed25519"] = "HMAC-SHA256"
    key_file: Path | None = None
    key_id: str | None = None


class DeadLetterSettings(_Model):
    kind: Literal["kafka", "file"] | None = None
    topic: str = Field("governance.events.dlq", min_length=1)
    path: Path = Path("deadletter")
    # Entries waiting for a write that keeps failing; past it the source stops reading.
    max_pending: int = Field(10_000, ge=1)


class ServerSettings(_Model):
    listen: str = "127.0.0.1:9464"

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


class ToolPoisoningSettings(_Model):
    enabled: bool = True


class DetectorsSettings(_Model):
    tool_poisoning: ToolPoisoningSettings = ToolPoisoningSettings()


class ShutdownSettings(_Model):
    timeout_s: float = Field(30.0, gt=0)


class LogSettings(_Model):
    level: Literal["debug", "info", "warning", "error"] = "info"


class Settings(_Model):
    """Everything govpipe reads from its config; the defaults are the embedded default."""

    source: SourceSettings = SourceSettings()
    cloudevents: CloudEventsSettings = CloudEventsSettings()
    signing: SigningSettings = SigningSettings()
    sinks: SinksSettings = SinksSettings()
    deadletter: DeadLetterSettings = DeadLetterSettings()
    server: ServerSettings = ServerSettings()
    detectors: DetectorsSettings = DetectorsSettings()
    shutdown: ShutdownSettings = ShutdownSettings()
    log: LogSettings = LogSettings()

    @model_validator(mode="after")
    def _runnable_together(self) -> Settings:
        # Runs only once every key is valid on its own, so a broken rule is the one problem.
        source = self.source
        if source.require_signature and source.kind != "kafka":
            # JSON lines carry no headers, so every record would be rejected `unsigned`.
            raise _broken_rule("source.require_signature", "needs source.kind = \"kafka\" "
                               "(producer signatures travel in Kafka headers)")
        if source.require_signature and source.inbound_key_file is None:
            raise _broken_rule("source.inbound_key_file",
                               "required when source.require_signature = true")
        if not self.sinks.enabled_by_name():
            raise _broken_rule("sinks", "no sink is enabled")
        if self.signing.alg == "Ed25519" and self.signing.key_id:
            # A verifier finds an Ed25519 key by its fingerprint; a chosen name would hide it.
            raise _broken_rule("signing.key_id", "not used with alg = \"Ed25519\" (the key id "
                               "is the public key's fingerprint); remove it")
        return self

    @property
    def deadletter_kind(self) -> Literal["kafka", "file"]:
        """Kafka when the source is Kafka, else a local directory, unless set."""
        if self.deadletter.kind is not None:
            return self.deadletter.kind
        return "kafka" if self.source.kind == "kafka" else "file"


def load_settings(path: Path | None = None, environ: Mapping[str, str] = os.environ) -> Settings:
    """Read `path` (optional), apply environment overrides, validate; raise `ConfigError`."""
    data: dict[str, Any] = _read_toml(path) if path is not None else {}
    from_env = _apply_env_overrides(data, environ)
    try:
        return Settings.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, from_env, path)) from None


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except FileNotFoundError:
        raise ConfigError(f"config file {path}: not found") from None
    except OSError as exc:
        raise ConfigError(f"config file {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path}: invalid TOML: {exc}") from None


def _apply_env_overrides(data: dict[str, Any], environ: Mapping[str, str]) -> dict[str, str]:
    """Merge GOVPIPE_A__B__C=value into data["a"]["b"]["c"]; return {dotted key: variable}."""
    applied: dict[str, str] = {}
    for name in sorted(environ):
        if not name.startswith(ENV_PREFIX) or name in NOT_OVERRIDES:
            continue
        parts = name[len(ENV_PREFIX):].lower().split("__")
        if len(parts) < 2 or not all(parts):
            raise ConfigError(f"{name}: not a config override; use GOVPIPE_<SECTION>__<KEY>")
        node = data
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"{name}: {'.'.join(parts[:-1])} is not a table")
            node = child
        node[parts[-1]] = environ[name]
        applied[".".join(parts)] = name
    return applied


def _describe(exc: ValidationError, from_env: Mapping[str, str], path: Path | None) -> str:
    error = exc.errors(include_input=False, include_url=False)[0]
    if error["type"] == _BROKEN_RULE:
        # The values may come from the file and the environment alike: no origin is named.
        return f"config error: {error['msg']}"
    key = ".".join(str(part) for part in error["loc"])
    problem = "unknown key" if error["type"] == "extra_forbidden" else error["msg"]
    problem = problem.removeprefix("Value error, ")
    origin = f" (from {from_env[key]})" if key in from_env else (f" (in {path})" if path else "")
    more = len(exc.errors()) - 1
    suffix = f"; {more} more problem(s)" if more else ""
    return f"config error: {key or 'config'}: {problem}{origin}{suffix}"
