"""The daemon wiring builds the OTLP and Kafka sinks from settings and no longer refuses them."""

from __future__ import annotations

from pipeline.app import build_sinks
from pipeline.settings import load_settings
from sinks.kafka import KafkaSink
from sinks.otlp.sink import OtlpSink
from sinks.stdout import StdoutSink


async def test_enabled_otlp_and_kafka_sinks_are_built() -> None:
    settings = load_settings(environ={
        "GOVPIPE_SOURCE__BOOTSTRAP_SERVERS": "broker-a:9092",
        "GOVPIPE_SINKS__KAFKA__ENABLED": "true",
        "GOVPIPE_SINKS__KAFKA__CONTENT_MODE": "binary",
        "GOVPIPE_SINKS__KAFKA__RECORD_BATCH_BYTES": "65536",
        "GOVPIPE_SINKS__OTLP__ENABLED": "true",
        "GOVPIPE_SINKS__OTLP__PROTOCOL": "http/protobuf",
        "GOVPIPE_SINKS__OTLP__HEADERS": "authorization=Bearer x",
    })
    sinks = {sink.name: sink for sink, _ in build_sinks(settings)}
    try:
        assert isinstance(sinks["stdout"], StdoutSink)
        assert isinstance(sinks["otlp"], OtlpSink)
        kafka = sinks["kafka"]
        assert isinstance(kafka, KafkaSink)
        # No sinks.kafka.bootstrap_servers: the source's brokers are used.
        assert kafka.bootstrap_servers == "broker-a:9092"
        assert kafka.content_mode == "binary"
        assert kafka.record_batch_bytes == 65536
    finally:
        for sink in sinks.values():
            if sink.name != "stdout":
                await sink.aclose()


def test_kafka_sink_brokers_can_differ_from_the_source() -> None:
    settings = load_settings(environ={
        "GOVPIPE_SINKS__KAFKA__ENABLED": "true",
        "GOVPIPE_SINKS__KAFKA__BOOTSTRAP_SERVERS": "broker-b:9092",
    })
    (kafka,) = [sink for sink, _ in build_sinks(settings) if sink.name == "kafka"]
    assert isinstance(kafka, KafkaSink)
    assert kafka.bootstrap_servers == "broker-b:9092"
