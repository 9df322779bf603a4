"""Builds the parts a daemon run needs from settings: the only place that constructs sinks,
signers and sources (adding a sink = one module in sinks/ + one entry in SINK_BUILDERS)."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping

from pipeline.deadletter.stores import DeadLetterDestination, FileDeadLetter, KafkaDeadLetter
from pipeline.ops.metrics import Metrics
from pipeline.settings import ConfigError, Settings, SinkSettings
from pipeline.signing.keys import load_signer
from pipeline.signing.signers import ED25519_ALG, Signer, ephemeral_signer
from pipeline.sources.kafka import KafkaSource
from pipeline.sources.lines import LineSource, Source
from pipeline.sources.offsets import OffsetTracker
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
    return KafkaSink(
        kafka.bootstrap_servers or settings.source.bootstrap_servers,
        kafka.topic,
        content_mode=kafka.content_mode,
        timeout_s=kafka.timeout_s,
        record_batch_bytes=kafka.record_batch_bytes,
    )


SINK_BUILDERS: Mapping[str, SinkBuilder] = {
    "stdout": lambda settings: StdoutSink(),
    "otlp": _otlp_sink,
    "kafka": _kafka_sink,
}


def refuse_unavailable(settings: Settings) -> None:
    """Refuse, naming the key, settings this version cannot run (or cannot run together)."""
    source = settings.source
    if source.require_signature and source.kind != "kafka":
        # JSON lines carry no headers, so every record would be rejected `unsigned`.
        raise ConfigError("config error: source.require_signature: needs source.kind = "
                          "\"kafka\" (producer signatures travel in Kafka headers)")
    if source.require_signature and source.inbound_key_file is None:
        raise ConfigError("config error: source.inbound_key_file: required when "
                          "source.require_signature = true")
    if not enabled_sinks(settings):
        raise ConfigError("config error: sinks: no sink is enabled")
    if settings.signing.alg == ED25519_ALG and settings.signing.key_id:
        # A verifier finds an Ed25519 key by its fingerprint; a chosen name would hide it.
        raise ConfigError("config error: signing.key_id: not used with alg = \"Ed25519\" "
                          "(the key id is the public key's fingerprint); remove it")


def enabled_sinks(settings: Settings) -> dict[str, SinkSettings]:
    """The enabled sinks' settings, by name."""
    sinks = {"stdout": settings.sinks.stdout, "otlp": settings.sinks.otlp,
             "kafka": settings.sinks.kafka}
    return {name: sink for name, sink in sinks.items() if sink.enabled}


def build_sinks(settings: Settings) -> list[tuple[Sink, SinkSettings]]:
    return [(SINK_BUILDERS[name](settings), sink_settings)
            for name, sink_settings in enabled_sinks(settings).items()]


def build_source(settings: Settings, tracker: OffsetTracker, metrics: Metrics) -> Source:
    if settings.source.kind == "kafka":
        return KafkaSource(settings.source, tracker, metrics,
                           revoke_timeout_s=settings.shutdown.timeout_s)
    if settings.source.kind == "file" and settings.source.path is not None:
        return LineSource.file(settings.source.path)
    return LineSource.stdin()


def build_deadletter(settings: Settings) -> DeadLetterDestination:
    if settings.deadletter_kind == "kafka":
        return KafkaDeadLetter(settings.source.bootstrap_servers, settings.deadletter.topic)
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
