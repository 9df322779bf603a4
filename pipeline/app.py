"""Builds the parts a daemon run needs from settings: the only place that constructs sinks,
signers and sources (adding a sink = one module in sinks/ + one entry in SINK_BUILDERS)."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping, Sequence

from prometheus_client import CollectorRegistry

from pipeline.daemon import Daemon, Parts
from pipeline.deadletter.file import FileDeadLetter
from pipeline.deadletter.kafka import KafkaDeadLetter
from pipeline.deadletter.store import DeadLetterStore
from pipeline.deadletter.writer import DeadLetterWriter
from pipeline.delivery.dispatcher import SinkDispatcher
from pipeline.delivery.ledger import Ledger
from pipeline.detectors.tool_poisoning import ToolPoisoningDetector
from pipeline.inbound.keys import load_inbound_keys
from pipeline.inbound.replay_seal import seal_check
from pipeline.inbound.verifier import InboundVerifier, NonceLimits
from pipeline.kafka_connection import client_options
from pipeline.ops.health import HealthRegistry, Status
from pipeline.ops.metrics import Metrics
from pipeline.ops.server import OpsServer
from pipeline.processor import EventProcessor
from pipeline.settings import Settings, SinkSettings
from pipeline.signing.keys import load_signer
from pipeline.signing.signers import Signer, SigningKeyError, ephemeral_signer
from pipeline.sources.base import Source
from pipeline.sources.kafka import KafkaSource
from pipeline.sources.lines import LineSource
from sinks.base import Sink
from sinks.kafka import KafkaSink
from sinks.otlp.sink import OtlpOptions, OtlpSink
from sinks.stdout import StdoutSink

log = logging.getLogger("govpipe")

SinkBuilder = Callable[[Settings], Sink]


def _otlp_sink(settings: Settings) -> Sink:
    otlp = settings.sinks.otlp
    return OtlpSink(OtlpOptions(
        endpoint=otlp.endpoint,
        protocol=otlp.protocol,
        headers={key: value.get_secret_value() for key, value in otlp.headers.items()},
        timeout_s=otlp.timeout_s,
        compression=otlp.compression,
        insecure=otlp.insecure,
        ca_file=otlp.ca_file,
        client_cert_file=otlp.client_cert_file,
        client_key_file=otlp.client_key_file,
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


def build_deadletter_store(settings: Settings) -> DeadLetterStore:
    """The dead-letter store `deadletter.kind` names: the daemon writes to it, `govpipe
    replay` reads it (the only place that looks at the kind)."""
    if settings.deadletter_kind == "kafka":
        return KafkaDeadLetter(client_options(settings.kafka), settings.deadletter.topic)
    return FileDeadLetter(settings.deadletter.path)


def build_signer(settings: Settings, environ: Mapping[str, str] = os.environ) -> Signer:
    """The signer for `signing.alg`, keyed from signing.key_file or GOVPIPE_SIGNING_KEY."""
    signing = settings.signing
    signer = load_signer(signing.alg, signing.key_file, signing.key_id, environ)
    if signer is None:
        log.warning("NO SIGNING KEY CONFIGURED: signing with an ephemeral key that dies with "
                    "this process; nobody can verify these events later. Set "
                    "GOVPIPE_SIGNING_KEY or signing.key_file (make a key: govpipe keygen).")
        signer = ephemeral_signer(signing.alg)
    return signer


def build_inbound(settings: Settings, signer: Signer,
                  metrics: Metrics) -> InboundVerifier | None:
    """The producer signature check `source.require_signature` asks for (None without);
    raises `SigningKeyError` for a bad inbound key file."""
    source = settings.source
    if not source.require_signature:
        return None
    if source.inbound_key_file is None:  # settings refuse it; never fail open anyway
        raise SigningKeyError("source.inbound_key_file: required with require_signature")
    limits = NonceLimits(source.nonce_capacity,
                         max(1, int(source.nonce_capacity * source.nonce_sender_share)))
    return InboundVerifier(load_inbound_keys(source.inbound_key_file), source.replay_window_s,
                           limits, metrics, seal_check=seal_check(signer))


def build_processor(settings: Settings, signer: Signer, metrics: Metrics,
                    inbound: InboundVerifier | None = None) -> EventProcessor:
    """The processor `settings` ask for; raises `SigningKeyError` for a bad inbound key file."""
    if inbound is None:
        inbound = build_inbound(settings, signer, metrics)
    detector = (ToolPoisoningDetector(metrics)
                if settings.detectors.tool_poisoning.enabled else None)
    return EventProcessor(signer, settings.source.max_event_bytes, settings.cloudevents.source,
                          inbound=inbound, detector=detector)


def build_daemon(settings: Settings, environ: Mapping[str, str] = os.environ, *,
                 sinks: Sequence[tuple[Sink, SinkSettings]] | None = None,
                 store: DeadLetterStore | None = None, signer: Signer | None = None,
                 registry: CollectorRegistry | None = None) -> Daemon:
    """The whole object graph of one run, from settings (tests may hand in their own
    sinks, dead-letter store, signer or registry)."""
    registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
    metrics = Metrics(registry)
    sinks = list(sinks) if sinks is not None else build_sinks(settings)
    ledger = Ledger(registry, [sink.name for sink, _ in sinks])
    signer = signer if signer is not None else build_signer(settings, environ)
    store = store if store is not None else build_deadletter_store(settings)
    deadletters = DeadLetterWriter(store, ledger, metrics,
                                   max_pending=settings.deadletter.max_pending)
    dispatchers = [SinkDispatcher(sink, sink_settings, ledger, deadletters)
                   for sink, sink_settings in sinks]
    inbound = build_inbound(settings, signer, metrics)
    source = build_source(settings, ledger, inbound)
    health = HealthRegistry()
    health.add("source", source.health)
    health.add("signer", lambda: signer_health(signer))
    health.add("deadletter", deadletters.health)
    for dispatcher in dispatchers:
        health.add(f"sink:{dispatcher.name}", dispatcher.health)
    server = OpsServer(registry, health, settings.server.host, settings.server.port)
    started: dict[str, object] = {
        "source": source.name, "sinks": [d.name for d in dispatchers],
        "signing_alg": signer.alg, "key_id": signer.key_id, "deadletter": store.description}
    return Daemon(Parts(settings=settings, source=source,
                        processor=build_processor(settings, signer, metrics, inbound),
                        ledger=ledger,
                        dispatchers=dispatchers, deadletters=deadletters, health=health,
                        server=server, started_fields=started))


def signer_health(signer: Signer) -> tuple[Status, str]:
    if signer.ephemeral:
        return Status.UNHEALTHY, (f"no signing key configured: {signer.alg} with an "
                                  "ephemeral key; nothing it signs can be verified later")
    return Status.HEALTHY, f"{signer.alg} key {signer.key_id} loaded"
