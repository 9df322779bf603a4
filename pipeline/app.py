"""Builds the parts a daemon run needs from settings: the only place that constructs sinks,
signers and sources (adding a sink = one module in sinks/ + one entry in SINK_BUILDERS)."""

from __future__ import annotations

import importlib.metadata
import logging
import os
import uuid
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from prometheus_client import CollectorRegistry

from pipeline.daemon import Daemon, Parts
from pipeline.deadletter.file import FileDeadLetter
from pipeline.deadletter.kafka import KafkaDeadLetter, StagedKafkaDeadLetter
from pipeline.deadletter.store import DeadLetterStore
from pipeline.deadletter.writer import DeadLetterWriter
from pipeline.delivery.dispatcher import SinkDispatcher
from pipeline.delivery.ledger import Ledger
from pipeline.detectors.tool_poisoning import ToolPoisoningDetector
from pipeline.exactly_once.committer import TransactionalCommitter
from pipeline.inbound.keys import InboundKeys, load_inbound_keys
from pipeline.inbound.replay_seal import seal_check
from pipeline.inbound.verifier import InboundVerifier, NonceLimits
from pipeline.kafka_connection import client_options
from pipeline.kafka_limits import RecordLimit
from pipeline.ops.health import HealthRegistry, Status
from pipeline.ops.http import HttpLimits
from pipeline.ops.metrics import Metrics
from pipeline.ops.server import OpsServer
from pipeline.ops.webconfig import WebConfig, load_web_config
from pipeline.processor import EventProcessor
from pipeline.reload import ConfigReloader, apply_live_settings
from pipeline.settings import Settings, SinkSettings, load_settings
from pipeline.signing.signers import Signer, SigningKeyError, ephemeral_signer
from pipeline.sources.base import Source
from pipeline.sources.kafka import KafkaSource
from pipeline.sources.lines import LineSource
from pipeline.startup import Keys, load_keys
from sinks.base import Sink
from sinks.kafka import KafkaSink
from sinks.kafka.staging import StagingKafkaSink
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


def _staging_kafka_sink(settings: Settings, committer: TransactionalCommitter) -> Sink:
    """The Kafka sink in exactly-once mode: its events go in the transactions that
    `committer` runs for their input partitions."""
    kafka = settings.sinks.kafka
    limit = RecordLimit(client_options(settings.kafka), kafka.topic)
    committer.limit_batches(limit)
    return StagingKafkaSink(
        kafka.topic, lambda topic, messages: committer.stage_events("kafka", topic, messages),
        room=committer.wait_for_room, content_mode=kafka.content_mode,
        max_record_bytes=limit.get)


def build_committer(settings: Settings, ledger: Ledger) -> TransactionalCommitter:
    """Exactly-once mode's committer: per input partition, one transactional producer
    that writes the staged records and commits the source offsets."""
    kafka = settings.sinks.kafka
    options = client_options(settings.kafka)
    return TransactionalCommitter(
        {**options, "acks": "all", "request_timeout_ms": int(kafka.timeout_s * 1000),
         "max_batch_size": kafka.record_batch_bytes, "linger_ms": kafka.linger_ms,
         "compression_type": None if kafka.compression_type == "none"
         else kafka.compression_type},
        settings.source.group_id, ledger)


def _kafka_sink(settings: Settings) -> Sink:
    kafka = settings.sinks.kafka
    table = "sinks.kafka.connection" if kafka.connection is not None else "kafka"
    options = client_options(settings.sink_kafka, table)
    limit = RecordLimit(options, kafka.topic)
    return KafkaSink(
        options.pop("bootstrap_servers"),
        kafka.topic,
        content_mode=kafka.content_mode,
        timeout_s=kafka.timeout_s,
        record_batch_bytes=kafka.record_batch_bytes,
        producer_options={**options, "linger_ms": kafka.linger_ms,
                          "compression_type": None if kafka.compression_type == "none"
                          else kafka.compression_type},
        max_record_bytes=limit.topic_limit,
    )


SINK_BUILDERS: Mapping[str, SinkBuilder] = {
    "stdout": lambda settings: StdoutSink(),
    "otlp": _otlp_sink,
    "kafka": _kafka_sink,
}


def enabled_sinks(settings: Settings) -> dict[str, SinkSettings]:
    """The enabled sinks' settings, by name (settings refuse a config that enables none)."""
    return settings.sinks.enabled_by_name()


def build_sinks(settings: Settings, committer: TransactionalCommitter | None = None
                ) -> list[tuple[Sink, SinkSettings]]:
    """The enabled sinks; with a `committer` (exactly-once) the Kafka sink stages into it."""
    return [(_staging_kafka_sink(settings, committer) if name == "kafka" and committer
             else SINK_BUILDERS[name](settings), sink_settings)
            for name, sink_settings in enabled_sinks(settings).items()]


def build_source(settings: Settings, ledger: Ledger,
                 inbound: InboundVerifier | None = None,
                 committer: TransactionalCommitter | None = None) -> Source:
    """The source `source.kind` names; a Kafka source rebuilds `inbound`'s nonces of each
    partition it is assigned, and commits its offsets through `committer` when given."""
    if settings.source.kind == "kafka":
        return KafkaSource(settings.source, ledger, client_options(settings.kafka),
                           revoke_timeout_s=settings.shutdown.timeout_s, inbound=inbound,
                           offsets=committer)
    if settings.source.kind == "file" and settings.source.path is not None:
        return LineSource.file(settings.source.path)
    return LineSource.stdin()


def build_deadletter_store(settings: Settings, signer: Signer | None = None,
                           committer: TransactionalCommitter | None = None) -> DeadLetterStore:
    """The dead-letter store `deadletter.kind` names: the daemon writes to it, signing each
    entry with `signer`; `govpipe replay` reads it (the only place that looks at the kind).
    With a `committer` (exactly-once) entries are staged into its transactions."""
    if settings.deadletter_kind == "kafka" and committer is not None:
        options, topic = client_options(settings.kafka), settings.deadletter.topic
        limit = RecordLimit(options, topic)
        committer.limit_batches(limit)
        return StagedKafkaDeadLetter(options, topic, committer.stage, signer,
                                     room=committer.wait_for_room, limit=limit)
    if settings.deadletter_kind == "kafka":
        return KafkaDeadLetter(client_options(settings.kafka), settings.deadletter.topic,
                               signer)
    return FileDeadLetter(settings.deadletter.path, signer,
                          max_bytes=settings.deadletter.max_bytes)


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
    exactly_once = settings.sinks.kafka.enabled and settings.sinks.kafka.exactly_once
    ledger = Ledger(registry, [sink.name for sink, _ in sinks] if sinks is not None
                    else list(enabled_sinks(settings)),
                    staging=("kafka",) if exactly_once else (), deadletters_staged=exactly_once)
    committer = build_committer(settings, ledger) if exactly_once else None
    sinks = list(sinks) if sinks is not None else build_sinks(settings, committer)
    signer = signer if signer is not None else build_signer(settings, environ, keys)
    store = store if store is not None else build_deadletter_store(settings, signer,
                                                                    committer)
    if committer is not None and isinstance(store, StagedKafkaDeadLetter):
        committer.use_dead_letters(store)  # what takes a refused record's place
    deadletters = DeadLetterWriter(store, ledger, metrics,
                                   max_pending=settings.deadletter.max_pending)
    dispatchers = [SinkDispatcher(sink, sink_settings, ledger, deadletters)
                   for sink, sink_settings in sinks]
    inbound = build_inbound(settings, signer, metrics, keys.inbound)
    source = build_source(settings, ledger, inbound, committer)
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
                        server=server, started_fields=started, reload=reloader.reload,
                        commit_wanted=committer.commit_wanted if committer else None))


def _health(source: Source, processor: EventProcessor, deadletters: DeadLetterWriter,
            dispatchers: Sequence[SinkDispatcher]) -> HealthRegistry:
    health = HealthRegistry()
    health.add("source", source.health)
    health.add("signer", lambda: signer_health(processor.signer))  # the current key
    health.add("deadletter", deadletters.health)
    for dispatcher in dispatchers:
        health.add(f"sink:{dispatcher.name}", dispatcher.health)
    return health


def build_ops_server(settings: Settings, registry: CollectorRegistry,
                     health: HealthRegistry, web: WebConfig) -> OpsServer:
    """The ops server `[server]` describes, with `web` from `load_web_config`."""
    server = settings.server
    limits = HttpLimits(read_header_timeout_s=server.read_header_timeout_s,
                        read_body_timeout_s=server.read_body_timeout_s,
                        write_timeout_s=server.write_timeout_s,
                        max_connections=server.max_connections,
                        max_connections_per_peer=server.max_connections_per_peer)
    return OpsServer(registry, health, server.host, server.port, limits=limits,
                     web=web)


def signer_health(signer: Signer) -> tuple[Status, str]:
    if signer.ephemeral:
        return Status.UNHEALTHY, (f"no signing key configured: {signer.alg} with an "
                                  "ephemeral key; nothing it signs can be verified later")
    return Status.HEALTHY, f"{signer.alg} key {signer.key_id} loaded"
