"""What a run loads and checks before it builds anything: the keys, the Kafka connections'
TLS and SASL material, the OTLP TLS files, the source file, the ops server's web config.
`govpipe run` and `govpipe check-config` both call `check_startup`, so they refuse the same
configs with the same one-line message."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from pipeline.inbound.keys import InboundKeys, load_inbound_keys
from pipeline.kafka_connection import client_options
from pipeline.ops.webconfig import load_web_config
from pipeline.settings import ConfigError, KafkaConnection, Settings
from pipeline.signing.keys import load_signer
from pipeline.signing.signers import Signer, SigningKeyError
from pipeline.tls_files import check_tls_files


@dataclass(frozen=True, slots=True)
class Keys:
    """The keys a run signs and checks with: loaded at start, and again on SIGHUP."""

    signer: Signer | None        # None: no key configured
    inbound: InboundKeys | None  # None: source.require_signature is off


def load_keys(settings: Settings, environ: Mapping[str, str] = os.environ) -> Keys:
    """The signing key (signing.key_file or GOVPIPE_SIGNING_KEY) and the inbound keys;
    `ConfigError` naming where a key came from (never what it holds)."""
    signing, source = settings.signing, settings.source
    try:
        signer = load_signer(signing.alg, signing.key_file, signing.key_id, environ)
        inbound = (load_inbound_keys(source.inbound_key_file)
                   if source.require_signature and source.inbound_key_file is not None
                   else None)
    except SigningKeyError as exc:
        raise ConfigError(f"config error: {exc}") from None
    return Keys(signer, inbound)


def check_startup(settings: Settings, environ: Mapping[str, str] = os.environ) -> Keys:
    """Load and check everything a run reads before it builds anything: keys, the Kafka
    connections' TLS and SASL material, the OTLP TLS files, the source file. `run` and
    `check-config` both call this, so they refuse the same configs with the same line
    (`ConfigError`); returns the keys `build_daemon` is then given."""
    keys = load_keys(settings, environ)
    for table, connection in kafka_connections(settings).items():
        client_options(connection, table)
    otlp = settings.sinks.otlp
    if otlp.enabled:
        check_tls_files({f"sinks.otlp.{key}": getattr(otlp, key)
                         for key in ("ca_file", "client_cert_file", "client_key_file")})
    if settings.source.kind == "file" and settings.source.path is not None:
        _check_readable(settings.source.path, "source.path")
    load_web_config(settings.server.web_config_file)
    return keys


def kafka_connections(settings: Settings) -> dict[str, KafkaConnection]:
    """The Kafka connections a run uses, by the table that configures each."""
    used: dict[str, KafkaConnection] = {}
    if settings.source.kind == "kafka" or settings.deadletter_kind == "kafka":
        used["kafka"] = settings.kafka
    if settings.sinks.kafka.enabled:
        table = "kafka" if settings.sinks.kafka.connection is None else "sinks.kafka.connection"
        used[table] = settings.sink_kafka
    return used


def _check_readable(path: Path, key: str) -> None:
    try:
        with path.open("rb"):
            pass
    except OSError as exc:
        raise ConfigError(f"config error: {key}: cannot read {path}: {exc.strerror}") from None
