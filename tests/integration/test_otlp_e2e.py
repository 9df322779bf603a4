"""Signed events through the OTLP sink into a real OpenTelemetry Collector, over gRPC and
over HTTP/protobuf: every event arrives, verifies, and carries the Agent OS attributes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

import pytest

from pipeline.signing.signers import HmacSigner
from sinks.base import SinkError
from sinks.otlp.sink import OtlpOptions, OtlpSink
from tests.support.events import TEST_KEY, example_lines, signed_examples
from tests.support.infra.certs import make_pki
from tests.support.infra.collector import Collector, LogRecord, ServerTls

pytestmark = pytest.mark.integration

Protocol = Literal["grpc", "http/protobuf"]
PROTOCOLS: list[Protocol] = ["grpc", "http/protobuf"]
SEVERITY = {"info": (9, "INFO"), "low": (9, "INFO"), "medium": (13, "WARN"),
            "high": (17, "ERROR"), "critical": (21, "FATAL")}


def _sink(collector: Collector, protocol: Protocol) -> OtlpSink:
    endpoint = collector.grpc_endpoint if protocol == "grpc" else collector.http_endpoint
    return OtlpSink(OtlpOptions(endpoint=endpoint, protocol=protocol, timeout_s=3.0,
                                service_version="9.9.9", service_instance_id="replica-a"))


def _expected_attributes(source: dict[str, Any]) -> dict[str, Any]:
    """What a record for this Agent OS input event must carry, from the input alone."""
    expected = {
        "event.name": "audit_entry",
        "cloudevents.event_spec_version": "1.0",
        "agt.agent.id": source["agent_id"],
        "agt.audit.event_type": source["kind"],
        "agt.audit.action": source["action"],
        "agt.audit.decision": source["decision"],
        "agt.audit.latency_ms": source["latency_ms"],
        "agt.audit.meta.event_id": source["event_id"],
        "agt.audit.meta.severity": source["severity"],
        "cloudevents.event_id": source["event_id"],
    }
    if source.get("reason"):
        expected["agt.audit.reason"] = source["reason"]
    for name in ("resource", "policy_name", "session_id"):
        if source.get(name):
            expected[f"agt.audit.meta.{name}"] = source[name]
    return expected


def _check_record(record: LogRecord, source: dict[str, Any], signer: HmacSigner) -> None:
    body = json.loads(record.body)
    assert signer.verify(body), f"signature of {source['event_id']} does not verify"
    attributes = record.attributes
    for name, value in _expected_attributes(source).items():
        assert attributes.get(name) == value, name
    assert attributes["cloudevents.event_type"] == body["type"]
    assert attributes["cloudevents.event_source"] == body["source"]
    number, text = SEVERITY[source["severity"]]
    assert (record.record.get("severityNumber"), record.record.get("severityText")) == (
        number, text)
    # OTLP/JSON writes ids as lowercase hex; absent when the event has none.
    assert record.record.get("traceId", "") == source.get("trace_id", "")
    assert record.record.get("spanId", "") == source.get("span_id", "")
    assert record.record.get("eventName") == "audit_entry"
    assert record.resource_attributes == {"service.name": "govpipe", "service.version": "9.9.9",
                                          "service.instance.id": "replica-a"}


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_every_event_arrives_verified_with_agent_os_attributes(
    fresh_otel_collector: Collector, protocol: Protocol
) -> None:
    events = signed_examples()
    sources = {json.loads(line)["event_id"]: json.loads(line) for line in example_lines()}
    sink = _sink(fresh_otel_collector, protocol)
    try:
        for start in range(0, len(events), 10):
            await sink.send(events[start:start + 10])
    finally:
        await sink.aclose()

    records = fresh_otel_collector.wait_for_log_records(len(events))
    by_id = {str(r.attributes["cloudevents.event_id"]): r for r in records}
    assert len(records) == len(events)
    assert set(by_id) == set(sources)
    signer = HmacSigner(TEST_KEY)
    for event_id, source in sources.items():
        _check_record(by_id[event_id], source, signer)


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_a_stopped_collector_fails_retriably_and_recovery_delivers(
    fresh_otel_collector: Collector, protocol: Protocol
) -> None:
    events = signed_examples()
    sink = _sink(fresh_otel_collector, protocol)
    try:
        await sink.send(events[:5])
        fresh_otel_collector.stop()
        with pytest.raises(SinkError) as caught:
            await sink.send(events[5:10])
        assert caught.value.retriable
        assert caught.value.reason == "export_failed"

        fresh_otel_collector.start()
        await sink.send(events[5:10])  # the same batch, retried by the dispatcher
    finally:
        await sink.aclose()

    records = fresh_otel_collector.wait_for_log_records(10)
    assert [r.attributes["cloudevents.event_id"] for r in records] == [e.id for e in events[:10]]


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_header_values_never_reach_logs_or_errors(
    fresh_otel_collector: Collector, protocol: Protocol, caplog: pytest.LogCaptureFixture
) -> None:
    secret = "Bearer s3cr3t-t0ken"
    endpoint = (fresh_otel_collector.grpc_endpoint if protocol == "grpc"
                else fresh_otel_collector.http_endpoint)
    options = OtlpOptions(endpoint=endpoint, protocol=protocol, timeout_s=2.0,
                          headers={"Authorization": secret})
    sink = OtlpSink(options)
    caplog.set_level("DEBUG")
    try:
        await sink.send(signed_examples()[:2])  # accepted with the header
        fresh_otel_collector.stop()
        with pytest.raises(SinkError) as caught:
            await sink.send(signed_examples()[:2])
    finally:
        await sink.aclose()
    assert secret not in str(caught.value)
    assert secret not in repr(options)
    assert caplog.records, "the exporter logged nothing about the failure"
    assert secret not in caplog.text


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_mutual_tls_with_the_configured_certificates(
    otel_collector: Collector, protocol: Protocol, tmp_path: Path
) -> None:
    pki = make_pki(tmp_path)
    tls = ServerTls(pki.server_cert, pki.server_key, client_ca_file=pki.ca_cert)
    with Collector(binary=otel_collector.binary, tls=tls) as collector:
        endpoint = collector.grpc_endpoint if protocol == "grpc" else collector.http_endpoint
        assert endpoint.startswith("https://")
        trusted = OtlpSink(OtlpOptions(
            endpoint=endpoint, protocol=protocol, timeout_s=3.0, insecure=False,
            ca_file=pki.ca_cert, client_cert_file=pki.client_cert,
            client_key_file=pki.client_key))
        anonymous = OtlpSink(OtlpOptions(endpoint=endpoint, protocol=protocol, timeout_s=2.0,
                                         insecure=False, ca_file=pki.ca_cert))
        events = signed_examples()[:3]
        try:
            await trusted.send(events)
            with pytest.raises(SinkError):  # no client certificate: the handshake fails
                await anonymous.send(events)
        finally:
            await trusted.aclose()
            await anonymous.aclose()
        records = collector.wait_for_log_records(3)
    assert [r.attributes["cloudevents.event_id"] for r in records] == [e.id for e in events]


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_gzip_compressed_exports_arrive(
    fresh_otel_collector: Collector, protocol: Protocol
) -> None:
    endpoint = (fresh_otel_collector.grpc_endpoint if protocol == "grpc"
                else fresh_otel_collector.http_endpoint)
    sink = OtlpSink(OtlpOptions(endpoint=endpoint, protocol=protocol, compression="gzip"))
    events = signed_examples()[:5]
    try:
        await sink.send(events)
    finally:
        await sink.aclose()
    records = fresh_otel_collector.wait_for_log_records(5)
    assert [r.body for r in records] == [e.body.decode() for e in events]
