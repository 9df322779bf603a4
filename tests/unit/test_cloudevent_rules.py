"""CloudEvents attribute rules on input, and the binary-mode value per content type."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from pipeline.cloudevents.attributes import is_valid_attribute_name
from pipeline.cloudevents.binding import binary_to_structured
from pipeline.cloudevents.content import is_json_content
from pipeline.model import Position, Record, Rejection, SignedEvent
from pipeline.processor import EventProcessor
from pipeline.signing.signers import HmacSigner
from sinks.kafka import binary_message
from sinks.kafka.messages import is_json_content as sink_is_json_content

KEY = bytes(range(32))
CE: dict[str, Any] = {"specversion": "1.0", "id": "c1", "source": "/agents/a",
                      "type": "ai.agentos.policy.check", "time": "2026-11-25T14:00:00Z"}
GOVERNANCE: dict[str, Any] = {"event_id": "g1", "kind": "policy_check", "agent_id": "a",
                              "occurred_at": "2026-11-25T14:00:00+00:00"}


def process(obj: dict[str, Any], headers: tuple[tuple[str, bytes], ...] = (),
            value: bytes | None = None) -> SignedEvent | Rejection:
    raw = json.dumps(obj).encode() if value is None else value
    record = Record(raw, Position("t", 0, 0), headers=headers)
    return EventProcessor(HmacSigner(KEY), 1 << 20).process(record)


def reason(result: SignedEvent | Rejection) -> str | None:
    return result.reason if isinstance(result, Rejection) else None


@pytest.mark.parametrize(("name", "valid"), [
    ("sessionid", True), ("a", True), ("x9", True), ("a" * 20, True),
    ("a" * 21, False), ("averyveryverylongextensionname", False), ("Bad_Name", False),
    ("badName", False), ("bad-name", False), ("bad_name", False), ("", False),
    ("café", False), ("\uff46\uff55\uff4c\uff4c", False), ("١٢٣", False),
])
def test_attribute_name_rule(name: str, valid: bool) -> None:
    assert is_valid_attribute_name(name) is valid


@pytest.mark.parametrize("extension", ["Bad_Name", "averyveryverylongextensionname",
                                       "UPPER", "dash-ed"])
def test_structured_input_with_a_bad_attribute_name_is_rejected_not_renamed(
        extension: str) -> None:
    assert reason(process({**CE, extension: "x"})) == "invalid_cloudevent"


def test_binary_input_header_names_are_not_lower_cased() -> None:
    headers = (("ce_specversion", b"1.0"), ("ce_id", b"b1"), ("ce_source", b"/s"),
               ("ce_type", b"t"), ("ce_Bad_Name", b"x"))
    assert binary_to_structured(headers, b"", 1024)["Bad_Name"] == "x"
    assert reason(process({}, headers, b"")) == "invalid_cloudevent"


@pytest.mark.parametrize("changes", [
    {"source": "has space"}, {"source": "1bad:scheme"}, {"source": "%zz"},
    {"type": ""}, {"subject": ""}, {"subject": 5}, {"subject": "line\nbreak"},
    {"datacontenttype": "json"}, {"datacontenttype": ""},
    {"dataschema": "relative/path"}, {"dataschema": 7},
    {"flag": None}, {"ratio": 1.5}, {"nested": {"a": 1}}, {"list": [1]},
    {"count": 2**31}, {"count": -(2**31) - 1}, {"ctl": "a\x7fb"},
    {"data": None}, {"data": {"a": 1}, "data_base64": "AAE="}, {"data_base64": "***"},
    {"data_base64": 5}, {"datacontenttype": "text/plain", "data": {"a": 1}},
])
def test_attribute_values_the_spec_forbids_are_rejected(changes: dict[str, Any]) -> None:
    assert reason(process({**CE, **changes})) == "invalid_cloudevent"


@pytest.mark.parametrize("time", ["2026-11-25t14:00:00z", "2026-11-25T14:00+00:00",
                                  "20261125T140000Z", "2026-11-25T24:00:00Z",
                                  "2026-11-25T14:00:60Z", "2026-11-25T14:00:00+24:00",
                                  "2026-11-25 14:00:00Z"])
def test_time_must_be_an_rfc3339_date_time(time: str) -> None:
    assert reason(process({**CE, "time": time})) == "bad_timestamp"
    assert reason(process({**GOVERNANCE, "occurred_at": time})) == "bad_timestamp"


@pytest.mark.parametrize("changes", [
    {"subject": "ünïcødé ✓"}, {"flag": True}, {"count": 2**31 - 1}, {"count": -(2**31)},
    {"dataschema": "https://schemas.example/p.json"}, {"source": "urn:agent:a"},
    {"datacontenttype": "text/plain; charset=utf-8", "data": "hello"},
    {"datacontenttype": "application/octet-stream", "data_base64": "AAE="},
    {"time": "2026-11-25T14:00:00.123456789-05:30"}, {"a" * 20: "twenty"},
])
def test_valid_cloudevents_are_signed(changes: dict[str, Any]) -> None:
    assert isinstance(process({**CE, **changes}), SignedEvent)


@pytest.mark.parametrize("changes", [{"agent_did": "not a uri"},
                                     {"session_id": "s\x00"}, {"trace_id": "t\n"}])
def test_governance_events_that_map_to_invalid_cloudevents_are_rejected(
        changes: dict[str, Any]) -> None:
    assert reason(process({**GOVERNANCE, **changes})) == "invalid_cloudevent"


@pytest.mark.parametrize(("content_type", "json_data"), [
    (None, True), ("application/json", True), ("application/json; charset=utf-8", True),
    ("text/json", True), ("application/cloudevents+json", True), ("APPLICATION/JSON", True),
    ("text/plain", False), ("application/octet-stream", False), ("application/jsonx", False),
    ("image/svg+xml", False),
])
def test_the_pipeline_and_the_kafka_sink_agree_on_json_content(
        content_type: str | None, json_data: bool) -> None:
    assert is_json_content(content_type) is json_data
    assert sink_is_json_content(content_type) is json_data


@pytest.mark.parametrize(("members", "value"), [
    ({"datacontenttype": "application/json", "data": {"a": 1}}, b'{"a":1}'),
    ({"datacontenttype": "application/json", "data": "quoted"}, b'"quoted"'),
    ({"data": "no content type is JSON"}, b'"no content type is JSON"'),
    ({"datacontenttype": "text/plain", "data": "hello world"}, b"hello world"),
    ({"datacontenttype": "text/plain", "data": "grüße ✓"}, "grüße ✓".encode()),
    ({"datacontenttype": "application/xml", "data": "<a/>"}, b"<a/>"),
    ({"datacontenttype": "application/octet-stream",
      "data_base64": base64.b64encode(b"\x00\xff").decode()}, b"\x00\xff"),
    ({"datacontenttype": "application/json"}, b""),
    ({}, b""),
])
def test_binary_mode_writes_data_in_its_own_form_and_never_a_null_value(
        members: dict[str, Any], value: bytes) -> None:
    written, headers = binary_message({**CE, **members})
    assert written == value
    names = [name for name, _ in headers]
    assert ("content-type" in names) is ("datacontenttype" in members)


@pytest.mark.parametrize(("content_type", "value", "expected"), [
    ("text/plain", b"hello world", {"data": "hello world"}),
    ("text/plain", b"\xff\xfe", {"data_base64": "//4="}),
    ("application/octet-stream", b"\x00\x01", {"data_base64": "AAE="}),
    ("application/json", b'{"a":1}', {"data": {"a": 1}}),
])
def test_binary_input_data_is_read_per_content_type(
        content_type: str, value: bytes, expected: dict[str, Any]) -> None:
    headers = [("ce_specversion", b"1.0"), ("content-type", content_type.encode())]
    event = binary_to_structured(headers, value, 1024)
    assert {k: v for k, v in event.items() if k in ("data", "data_base64")} == expected


def test_binary_round_trip_gives_back_the_signed_event() -> None:
    signed = process({**CE, "datacontenttype": "text/plain", "data": "hello world"})
    assert isinstance(signed, SignedEvent)
    value, headers = binary_message(signed.attributes)
    assert binary_to_structured(headers, value, 1024) == json.loads(signed.body)


def test_typed_extensions_are_refused_only_when_binary_mode_is_written() -> None:
    record = Record(json.dumps({**CE, "count": 7, "flag": True}).encode(), Position("t", 0, 0))
    structured = EventProcessor(HmacSigner(KEY), 1 << 20).process(record)
    assert isinstance(structured, SignedEvent)
    binary = EventProcessor(HmacSigner(KEY), 1 << 20, binary_output=True)
    assert reason(binary.process(record)) == "typed_extension"
    strings = Record(json.dumps({**CE, "count": "7"}).encode(), Position("t", 0, 1))
    assert isinstance(binary.process(strings), SignedEvent)


@pytest.mark.parametrize(("members", "refused"), [
    ({"datacontenttype": "application/xml", "data": "<a/>"}, True),
    ({"datacontenttype": "text/plain", "data": ""}, True),
    ({"datacontenttype": "text/plain", "data_base64": "AAE="}, True),
    ({"datacontenttype": "application/json", "data_base64": "AAE="}, True),
    ({"datacontenttype": "application/octet-stream", "data_base64": ""}, True),
    ({"datacontenttype": "text/plain", "data": "hi"}, False),
    ({"datacontenttype": "application/json", "data": ""}, False),
    ({"datacontenttype": "application/octet-stream", "data_base64": "AAE="}, False),
    ({}, False),
])
def test_binary_output_refuses_data_a_consumer_would_read_back_differently(
        members: dict[str, Any], refused: bool) -> None:
    record = Record(json.dumps({**CE, **members}).encode(), Position("t", 0, 0))
    result = EventProcessor(HmacSigner(KEY), 1 << 20, binary_output=True).process(record)
    assert reason(result) == ("ambiguous_data" if refused else None)
