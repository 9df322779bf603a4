"""Builds the parts a daemon run needs from settings: the only place that constructs sinks,
signers and sources (adding a sink = one module in sinks/ + one entry in SINK_BUILDERS)."""

from __future__ import annotations

import importlib.metadata
import logging
import os
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from prometheus_client import CollectorRegistry

from pipeline.daemon import Daemon, Parts
from pipeline.deadletter.file import FileDeadLetter
from pipeline.deadletter.kafka import KafkaDeadLetter
from pipeline.deadletter.store import DeadLetterStore
from pipeline.deadletter.writer import DeadLetterWriter
from pipeline.delivery.dispatcher import SinkDispatcher
from pipeline.delivery.ledger import Ledger
from pipeline.detectors.tool_poisoning import ToolPoisoningDetector
from pipeline.inbound.keys import InboundKeys, load_inbound_keys
from pipeline.inbound.replay_seal import seal_check
from pipeline.inbound.verifier import InboundVerifier, NonceLimits
from pipeline.kafka_connection import client_options
from pipeline.ops.health import HealthRegistry, Status
from pipeline.ops.http import HttpLimits
from pipeline.ops.metrics import Metrics
from pipeline.ops.server import OpsServer
from pipeline.ops.webconfig import WebConfig, load_web_config
from pipeline.processor import EventProcessor
from pipeline.reload import ConfigReloader
from pipeline.settings import ConfigError, KafkaConnection, Settings, SinkSettings, load_settings
from pipeline.signing.keys import load_signer
from pipeline.signing.signers import Signer, SigningKeyError, ephemeral_signer
from pipeline.sources.base import Source
from pipeline.sources.kafka import KafkaSource
from pipeline.sources.lines import LineSource
from pipeline.tls_files import check_tls_files
from sinks.base import Sink
from sinks.kafka import KafkaSink
from sinks.otlp.sink import OtlpOptions, OtlpSink
from sinks.stdout import StdoutSink

log = logging.getLogger("govpipe")

SinkBuilder = Callable[[Settings], Sink]


def govpipe_version() -> str:
    """The installed package's version (service.version), or "" when not installed."""
    try:
        return importlib.metadata.version("govpipe")
    except importlib.metadata.PackageNotFoundError:
        return ""


def _otlp_sink(settings: Settings) -> Sink:
    otlp = settings.sinks.otlp
    return OtlpSink(OtlpOptions(
        endpoint=otlp.endpoint,
        protocol=otlp.protocol,
        headers={key: value.get_secret_value() for key, value in otlp.headers.items()},
        timeout_s=otlp.timeout_s,
        compression=otlp.compression,
        insecure=not otlp.uses_tls,
        ca_file=otlp.ca_file,
        client_cert_file=otlp.client_cert_file,
        client_key_file=otlp.client_key_file,
        service_version=govpipe_version(),
        service_instance_id=otlp.service_instance_id or str(uuid.uuid4()),
    ))


def _kafka_sink(settings: Settings) -> Sink:
    kafka = settings.sinks.kafka
    table = "sinks.kafka.connection" if kafka.connection is not None else "kafka"
    options = client_options(settings.sink_kafka, table)
    return KafkaSink(
        options.pop("bootstrap_servers"),
        kafka.topic,
        content_mode=kafka.content_mode,
        timeout_s=kafka.timeout_s,
        record_batch_bytes=kafka.record_batch_bytes,
        producer_options={**options, "linger_ms": kafka.linger_ms,
                          "compression_type": None if kafka.compression_type == "none"
                          else kafka.compression_type},
    )


SINK_BUILDERS: Mapping[str, SinkBuilder] = {
    "stdout": lambda settings: StdoutSink(),
    "otlp": _otlp_sink,
    "kafka": _kafka_sink,
}


def enabled_sinks(settings: Settings) -> dict[str, SinkSettings]:
    """The enabled sinks' settings, by name (settings refuse a config that enables none)."""
    return settings.sinks.enabled_by_name()


def build_sinks(settings: Settings) -> list[tuple[Sink, SinkSettings]]:
    return [(SINK_BUILDERS[name](settings), sink_settings)
            for name, sink_settings in enabled_sinks(settings).items()]


def build_source(settings: Settings, ledger: Ledger,
                 inbound: InboundVerifier | None = None) -> Source:
    """The source `source.kind` names; a Kafka source rebuilds `inbound`'s nonces of each
    partition it is assigned."""
    if settings.source.kind == "kafka":
        return KafkaSource(settings.source, ledger, client_options(settings.kafka),
                           revoke_timeout_s=settings.shutdown.timeout_s, inbound=inbound)
    if settings.source.kind == "file" and settings.source.path is not None:
        return LineSource.file(settings.source.path)
    return LineSource.stdin()


def build_deadletter_store(settings: Settings, signer: Signer | None = None) -> DeadLetterStore:
    """The dead-letter store `deadletter.kind` names: the daemon writes to it, signing each
    entry with `signer`; `govpipe replay` reads it (the only place that looks at the kind)."""
    if settings.deadletter_kind == "kafka":
        return KafkaDeadLetter(client_options(settings.kafka), settings.deadletter.topic,
                               signer)
    return FileDeadLetter(settings.deadletter.path, signer,
                          max_bytes=settings.deadletter.max_bytes)


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


def build_signer(settings: Settings, environ: Mapping[str, str] = os.environ,
                 keys: Keys | None = None) -> Signer:
    """The signer for `signing.alg`, keyed from signing.key_file or GOVPIPE_SIGNING_KEY
    (or `keys`, already loaded); an ephemeral one, loudly, when no key is configured."""
    signing = settings.signing
    signer = (keys or load_keys(settings, environ)).signer
    if signer is None:
        log.warning("NO SIGNING KEY CONFIGURED: signing with an ephemeral key that dies with "
                    "this process; nobody can verify these events later. Set "
                    "GOVPIPE_SIGNING_KEY or signing.key_file (make a key: govpipe keygen).")
        signer = ephemeral_signer(signing.alg)
    return signer


def build_inbound(settings: Settings, signer: Signer, metrics: Metrics,
                  inbound_keys: InboundKeys | None = None) -> InboundVerifier | None:
    """The producer signature check `source.require_signature` asks for (None without);
    raises `SigningKeyError` for a bad inbound key file (when `inbound_keys` are not given,
    already loaded)."""
    source = settings.source
    if not source.require_signature:
        return None
    if source.inbound_key_file is None:  # settings refuse it; never fail open anyway
        raise SigningKeyError("source.inbound_key_file: required with require_signature")
    limits = NonceLimits(source.nonce_capacity,
                         max(1, int(source.nonce_capacity * source.nonce_sender_share)))
    keys = inbound_keys or load_inbound_keys(source.inbound_key_file)
    return InboundVerifier(keys, source.replay_window_s, limits, metrics,
                           seal_check=seal_check(signer))


def build_processor(settings: Settings, signer: Signer, metrics: Metrics,
                    inbound: InboundVerifier | None = None) -> EventProcessor:
    """The processor `settings` ask for; raises `SigningKeyError` for a bad inbound key file."""
    if inbound is None:
        inbound = build_inbound(settings, signer, metrics)
    detector = (ToolPoisoningDetector(metrics)
                if settings.detectors.tool_poisoning.enabled else None)
    kafka = settings.sinks.kafka
    return EventProcessor(signer, settings.source.max_event_bytes, settings.cloudevents.source,
                          inbound=inbound, detector=detector,
                          binary_output=kafka.enabled and kafka.content_mode == "binary")


def build_daemon(settings: Settings, environ: Mapping[str, str] = os.environ, *,
                 config_path: Path | None = None, keys: Keys | None = None,
                 sinks: Sequence[tuple[Sink, SinkSettings]] | None = None,
                 store: DeadLetterStore | None = None, signer: Signer | None = None,
                 registry: CollectorRegistry | None = None) -> Daemon:
    """The whole object graph of one run, from settings read from `config_path` and
    `environ` (read again on SIGHUP) and the `keys` `check_startup` loaded (tests may hand
    in their own sinks, dead-letter store, signer or registry)."""
    web = load_web_config(settings.server.web_config_file)  # a bad one stops start-up first
    registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
    metrics = Metrics(registry)
    keys = keys if keys is not None else load_keys(settings, environ)
    sinks = list(sinks) if sinks is not None else build_sinks(settings)
    ledger = Ledger(registry, [sink.name for sink, _ in sinks])
    signer = signer if signer is not None else build_signer(settings, environ, keys)
    store = store if store is not None else build_deadletter_store(settings, signer)
    deadletters = DeadLetterWriter(store, ledger, metrics,
                                   max_pending=settings.deadletter.max_pending)
    dispatchers = [SinkDispatcher(sink, sink_settings, ledger, deadletters)
                   for sink, sink_settings in sinks]
    inbound = build_inbound(settings, signer, metrics, keys.inbound)
    source = build_source(settings, ledger, inbound)
    processor = build_processor(settings, signer, metrics, inbound)
    health = _health(source, processor, deadletters, dispatchers)
    server = build_ops_server(settings, registry, health, web)
    reloader = ConfigReloader(settings, lambda: load_settings(config_path, environ),
                              lambda new: apply_live_settings(processor, new, environ, store))
    started: dict[str, object] = {
        "source": source.name, "sinks": [d.name for d in dispatchers],
        "signing_alg": signer.alg, "key_id": signer.key_id, "deadletter": store.description}
    return Daemon(Parts(settings=settings, source=source, processor=processor, ledger=ledger,
                        dispatchers=dispatchers, deadletters=deadletters, health=health,
                        server=server, started_fields=started, reload=reloader.reload))


def _health(source: Source, processor: EventProcessor, deadletters: DeadLetterWriter,
            dispatchers: Sequence[SinkDispatcher]) -> HealthRegistry:
    health = HealthRegistry()
    health.add("source", source.health)
    health.add("signer", lambda: signer_health(processor.signer))  # the current key
    health.add("deadletter", deadletters.health)
    for dispatcher in dispatchers:
        health.add(f"sink:{dispatcher.name}", dispatcher.health)
    return health


def apply_live_settings(processor: EventProcessor, settings: Settings,
                        environ: Mapping[str, str] = os.environ,
                        store: DeadLetterStore | None = None) -> dict[str, object]:
    """What a reload changes while running (see `pipeline.reload`): the keys, loaded again
    from their files (the processor's, and the dead-letter `store`'s, which signs entries
    with the same key), and the log level. `ConfigError`, nothing changed, when a key cannot
    be loaded or a configured key was removed (no falling back to an ephemeral key)."""
    keys = load_keys(settings, environ)
    signer = keys.signer
    current = processor.signer
    if signer is None:
        if not current.ephemeral:
            raise ConfigError("config error: signing.key_file: no signing key configured any "
                              "more (neither signing.key_file nor GOVPIPE_SIGNING_KEY); "
                              "the current key stays")
        signer = current if current.alg == settings.signing.alg else \
            ephemeral_signer(settings.signing.alg)
    processor.use_keys(signer, keys.inbound)
    if isinstance(store, FileDeadLetter | KafkaDeadLetter):
        store.use_signer(signer)
    logging.getLogger().setLevel(settings.log.level.upper())
    return {"signing_alg": signer.alg, "key_id": signer.key_id}


def build_ops_server(settings: Settings, registry: CollectorRegistry,
                     health: HealthRegistry, web: WebConfig) -> OpsServer:
    """The ops server `[server]` describes, with `web` from `load_web_config`."""
    server = settings.server
    limits = HttpLimits(read_header_timeout_s=server.read_header_timeout_s,
                        read_body_timeout_s=server.read_body_timeout_s,
                        write_timeout_s=server.write_timeout_s,
                        max_connections=server.max_connections)
    return OpsServer(registry, health, server.host, server.port, limits=limits,
                     web=web)


def signer_health(signer: Signer) -> tuple[Status, str]:
    if signer.ephemeral:
        return Status.UNHEALTHY, (f"no signing key configured: {signer.alg} with an "
                                  "ephemeral key; nothing it signs can be verified later")
    return Status.HEALTHY, f"{signer.alg} key {signer.key_id} loaded"
