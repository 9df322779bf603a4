"""Pure mappings of the OTLP and Kafka sinks: severity, ids, attributes, binary headers."""

from __future__ import annotations

import pytest
from opentelemetry._logs import SeverityNumber
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord

from pipeline.model import SignedEvent
from sinks.base import SinkError
from sinks.kafka import binary_message, to_sink_error
from sinks.otlp.http_transport import logs_url
from sinks.otlp.records import encode_log_record, event_type, log_attributes, severity
from tests.support.events import signed_examples


@pytest.mark.parametrize(
    ("value", "number", "text"),
    [
        ("info", SeverityNumber.INFO, "INFO"),
        ("low", SeverityNumber.INFO, "INFO"),
        ("warning", SeverityNumber.WARN, "WARN"),
        ("Medium", SeverityNumber.WARN, "WARN"),
        ("high", SeverityNumber.ERROR, "ERROR"),
        ("error", SeverityNumber.ERROR, "ERROR"),
        ("CRITICAL", SeverityNumber.FATAL, "FATAL"),
        ("catastrophic", SeverityNumber.UNSPECIFIED, None),
        (None, SeverityNumber.UNSPECIFIED, None),
        (3, SeverityNumber.UNSPECIFIED, None),
    ],
)
def test_severity_mapping(value: object, number: SeverityNumber, text: str | None) -> None:
    assert severity(value) == (number, text)


def test_event_type_is_the_agent_os_kind() -> None:
    assert event_type("ai.agentos.policy.check") == "policy_check"
    assert event_type("ai.agentos.mcp.tool_poisoning") == "mcp_tool_poisoning"
    assert event_type("ai.agentos.governance.custom_kind") == "custom_kind"
    assert event_type("com.example.other") == "com.example.other"


def test_log_attributes_follow_agent_os_names() -> None:
    event = signed_examples()[0]
    attributes = log_attributes(event.attributes)
    assert attributes == {
        "event.name": "audit_entry",
        "cloudevents.event_id": event.id,
        "cloudevents.event_type": "ai.agentos.policy.check",
        "cloudevents.event_source": "did:mesh:7f3a9c2e41b8d605",
        "cloudevents.event_spec_version": "1.0",
        "agt.agent.id": "research-agent-7",
        "agt.audit.event_type": "policy_check",
        "agt.audit.action": "web_search",
        "agt.audit.decision": "allow",
        "agt.audit.reason": "rule allow-public-search matched",
        "agt.audit.latency_ms": 1.163,
        "agt.audit.meta.event_id": event.id,
        "agt.audit.meta.severity": "info",
        "agt.audit.meta.resource": "https://api.search.example/v1/query",
        "agt.audit.meta.policy_name": "research-default",
        "agt.audit.meta.session_id": "sess-r7-20261125-0931",
        "agt.audit.meta.schema_version": "1",
    }


def log_record(event: SignedEvent) -> LogRecord:
    return LogRecord.FromString(encode_log_record(event, observed_ns=42))


def test_log_record_carries_body_time_and_valid_trace_ids() -> None:
    event = signed_examples()[0]
    record = log_record(event)
    assert record.body.string_value == event.body.decode()
    assert record.trace_id.hex() == "1c5f39e191095278da7bb8a0aece3e47"
    assert record.span_id.hex() == "de6e169f233c5ae6"
    assert record.time_unix_nano == 1_795_615_330_039_522_000  # 2026-11-25T14:02:10.039522Z
    assert record.observed_time_unix_nano == 42
    assert (record.severity_number, record.severity_text) == (SeverityNumber.INFO.value, "INFO")


@pytest.mark.parametrize("traceid", ["xyz", "1c5f39e1", "0" * 32, 42])
def test_invalid_trace_ids_are_left_out(traceid: object) -> None:
    event = signed_examples()[0]
    attributes = {**event.attributes, "traceid": traceid, "spanid": "nothex!!nothex!!"}
    record = log_record(type(event)(event.id, attributes, event.body, event.position))
    assert record.trace_id == b""
    assert record.span_id == b""


def test_logs_url_appends_the_signal_path_once() -> None:
    assert logs_url("http://c:4318") == "http://c:4318/v1/logs"
    assert logs_url("http://c:4318/") == "http://c:4318/v1/logs"
    assert logs_url("https://c/otlp") == "https://c/otlp/v1/logs"
    assert logs_url("http://c:4318/v1/logs") == "http://c:4318/v1/logs"


def test_binary_mode_headers_follow_the_kafka_binding() -> None:
    ce = {"specversion": "1.0", "id": "e1", "type": "t", "source": "/s",
          "datacontenttype": "application/json", "data": {"a": 1}, "flag": True, "n": 7}
    value, headers = binary_message(ce)
    assert value == b'{"a":1}'
    assert headers == [
        ("ce_specversion", b"1.0"), ("ce_id", b"e1"), ("ce_type", b"t"), ("ce_source", b"/s"),
        ("content-type", b"application/json"), ("ce_flag", b"true"), ("ce_n", b"7"),
    ]


def test_kafka_errors_keep_their_retriable_flag_and_name_the_class() -> None:
    from aiokafka.errors import KafkaConnectionError, MessageSizeTooLargeError

    refused = to_sink_error(MessageSizeTooLargeError())
    down = to_sink_error(KafkaConnectionError("gone"))
    assert (refused.retriable, refused.reason) == (False, "message_size_too_large_error")
    assert (down.retriable, down.reason) == (True, "kafka_connection_error")
    assert isinstance(to_sink_error(TimeoutError()), SinkError)
    assert to_sink_error(TimeoutError()).retriable
