"""Settings: one TOML file plus GOVPIPE_<SECTION>__<KEY> environment overrides, validated
here and nowhere else, rules across keys included. A bad key or value, or keys that cannot
work together, raise `ConfigError` naming the key."""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import PrivateAttr, ValidationError, model_validator

from pipeline.settings.base import BROKEN_RULE, ConfigError, StrictModel, broken_rule
from pipeline.settings.kafka import KafkaConnection, moved_sink_servers, moved_source_servers
from pipeline.settings.sections import (
    CloudEventsSettings,
    DeadLetterSettings,
    DetectorsSettings,
    LogSettings,
    ServerSettings,
    ShutdownSettings,
    SigningSettings,
    SourceSettings,
    ToolPoisoningSettings,
)
from pipeline.settings.sinks import (
    OTLP_DEFAULT_ENDPOINTS,
    BreakerSettings,
    KafkaSinkSettings,
    OtlpSinkSettings,
    RetrySettings,
    SinkSettings,
    SinksSettings,
    StdoutSinkSettings,
)

__all__ = [
    "OTLP_DEFAULT_ENDPOINTS", "BreakerSettings", "CloudEventsSettings", "ConfigError",
    "DeadLetterSettings", "DetectorsSettings", "KafkaConnection", "KafkaSinkSettings",
    "LogSettings", "OtlpSinkSettings", "RetrySettings", "ServerSettings", "Settings",
    "ShutdownSettings", "SigningSettings", "SinkSettings", "SinksSettings", "SourceSettings",
    "StdoutSinkSettings", "ToolPoisoningSettings", "load_settings",
]

ENV_PREFIX = "GOVPIPE_"
# GOVPIPE_* variables that are not config overrides (key material, tool caches).
NOT_OVERRIDES = frozenset({"GOVPIPE_SIGNING_KEY", "GOVPIPE_CACHE"})
# Every override has a section and a key; a name without one is somebody else's variable.
_OVERRIDE_SEPARATOR = "__"
_NAMED_KEY = re.compile(r"([a-z_]+): ")


class Settings(StrictModel):
    """Everything govpipe reads from its config; the defaults are the embedded default."""

    kafka: KafkaConnection = KafkaConnection()
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
            raise broken_rule("source.require_signature", "needs source.kind = \"kafka\" "
                               "(producer signatures travel in Kafka headers)")
        if source.require_signature and source.inbound_key_file is None:
            raise broken_rule("source.inbound_key_file",
                               "required when source.require_signature = true")
        if not self.sinks.enabled_by_name():
            raise broken_rule("sinks", "no sink is enabled")
        if source.heartbeat_interval_ms >= source.session_timeout_ms:
            raise broken_rule("source.heartbeat_interval_ms",
                              "must be below source.session_timeout_ms")
        _exactly_once_runnable(self)
        if (self.deadletter_kind == "file"
                and self.deadletter.max_bytes < 2 * source.max_event_bytes):
            # An entry holds its record (base64 for binary): one must always fit.
            raise broken_rule("deadletter.max_bytes",
                              "must be at least 2 x source.max_event_bytes")
        if self.signing.alg == "Ed25519" and self.signing.key_id:
            # A verifier finds an Ed25519 key by its fingerprint; a chosen name would hide it.
            raise broken_rule("signing.key_id", "not used with alg = \"Ed25519\" (the key id "
                               "is the public key's fingerprint); remove it")
        return self

    _deprecations: tuple[str, ...] = PrivateAttr(default=())

    @property
    def deprecations(self) -> tuple[str, ...]:
        """Warnings to log once at start-up: old keys the config still uses, each with
        what replaces it, and GOVPIPE_* variables ignored as not config overrides."""
        return self._deprecations

    @property
    def sink_kafka(self) -> KafkaConnection:
        """The cluster the Kafka sink writes to."""
        return self.sinks.kafka.connection or self.kafka

    @property
    def deadletter_kind(self) -> Literal["kafka", "file"]:
        """Kafka when the source is Kafka, else a local directory, unless set."""
        if self.deadletter.kind is not None:
            return self.deadletter.kind
        return "kafka" if self.source.kind == "kafka" else "file"


def _exactly_once_runnable(settings: Settings) -> None:
    """Exactly-once commits the source's offsets in the sink's transactions: the source and
    the dead-letter must be Kafka topics of the sink's cluster."""
    if not (settings.sinks.kafka.enabled and settings.sinks.kafka.exactly_once):
        return
    key = "sinks.kafka.exactly_once"
    if settings.source.kind != "kafka":
        raise broken_rule(key, "needs source.kind = \"kafka\" (the consumer offsets commit "
                               "in the same transaction as the output)")
    if settings.deadletter_kind != "kafka":
        raise broken_rule(key, "needs deadletter.kind = \"kafka\" (dead-letter entries "
                               "commit in the same transaction)")
    if settings.sinks.kafka.connection is not None:
        raise broken_rule(key, "needs the sink on the [kafka] cluster (remove "
                               "[sinks.kafka.connection]): one transaction spans one cluster")


def load_settings(path: Path | None = None, environ: Mapping[str, str] = os.environ) -> Settings:
    """Read `path` (optional), apply environment overrides, validate; raise `ConfigError`."""
    data: dict[str, Any] = _read_toml(path) if path is not None else {}
    _refuse_secrets_in_file(data, path)
    overrides: dict[str, Any] = {}
    from_env = _apply_env_overrides(overrides, environ)
    # Old keys move within their own layer, so an old variable still beats the new key in
    # the file, as every environment override does.
    notices = moved_source_servers(data) + moved_source_servers(overrides)
    _merge(data, overrides)
    notices += moved_sink_servers(data)
    try:
        settings = Settings.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, from_env, path)) from None
    settings._deprecations = tuple(notices + _ignored_variables_notice(environ))
    return settings


def _ignored_variables_notice(environ: Mapping[str, str]) -> list[str]:
    """One notice naming every GOVPIPE_* variable that is not SECTION__KEY shaped.

    Kubernetes injects GOVPIPE_SERVICE_HOST, GOVPIPE_PORT… into every pod of a namespace
    holding a Service named govpipe, so such names are expected and must not stop the
    daemon. Only names are shown: a value may be a secret."""
    ignored = sorted(name for name in environ if _is_foreign(name))
    if not ignored:
        return []
    return [f"ignoring {len(ignored)} GOVPIPE_* variable(s) that are not config overrides "
            f"(GOVPIPE_<SECTION>__<KEY>): {', '.join(ignored)}"]


def _is_foreign(name: str) -> bool:
    return (name.startswith(ENV_PREFIX) and name not in NOT_OVERRIDES
            and _OVERRIDE_SEPARATOR not in name[len(ENV_PREFIX):])


def _merge(base: dict[str, Any], overrides: Mapping[str, Any]) -> None:
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            _merge(base[key], value)
        else:
            base[key] = value


def _refuse_secrets_in_file(data: Mapping[str, Any], path: Path | None) -> None:
    """A password belongs in a file of its own or the environment, not in the config."""
    sinks = data.get("sinks") if isinstance(data.get("sinks"), dict) else {}
    sink = sinks.get("kafka") if isinstance(sinks, dict) else None
    tables = {"kafka": data.get("kafka"),
              "sinks.kafka.connection": sink.get("connection") if isinstance(sink, dict)
              else None}
    for name, table in tables.items():
        if isinstance(table, dict) and "sasl_password" in table:
            variable = f"GOVPIPE_{name.upper().replace('.', '__')}__SASL_PASSWORD"
            raise ConfigError(f"config error: {name}.sasl_password: not in the config file "
                              f"({path}): use sasl_password_file or {variable}")


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
        if not name.startswith(ENV_PREFIX) or name in NOT_OVERRIDES or _is_foreign(name):
            continue
        parts = name[len(ENV_PREFIX):].lower().split(_OVERRIDE_SEPARATOR)
        if not all(parts):
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
    if error["type"] == BROKEN_RULE:
        # The values may come from the file and the environment alike: no origin is named.
        return f"config error: {error['msg']}"
    key = ".".join(str(part) for part in error["loc"])
    problem = "unknown key" if error["type"] == "extra_forbidden" else error["msg"]
    problem = problem.removeprefix("Value error, ")
    if (named := _NAMED_KEY.match(problem)) and key:
        # A table's own rule names the key it is about: "kafka" + "sasl_username: …".
        key, problem = f"{key}.{named[1]}", problem[named.end():]
    origin = f" (from {from_env[key]})" if key in from_env else (f" (in {path})" if path else "")
    more = len(exc.errors()) - 1
    suffix = f"; {more} more problem(s)" if more else ""
    return f"config error: {key or 'config'}: {problem}{origin}{suffix}"
