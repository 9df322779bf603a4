"""Binary-mode CloudEvents (Kafka protocol binding) decoded from headers."""

from __future__ import annotations

import pytest

from pipeline.cloudevents.binding import binary_to_structured, is_binary_mode
from pipeline.cloudevents.mapping import InvalidEvent, to_cloudevent

HEADERS = [("ce_specversion", b"1.0"), ("ce_id", b"b1"), ("ce_source", b"/agents/a"),
           ("ce_type", b"ai.agentos.policy.check"), ("content-type", b"application/json"),
           ("ce_traceid", b"abc"), ("other", b"ignored")]


def test_headers_and_json_value_make_a_structured_event() -> None:
    assert is_binary_mode(HEADERS)
    event = binary_to_structured(HEADERS, b'{"decision": "deny"}', 1024)
    assert event == {"specversion": "1.0", "id": "b1", "source": "/agents/a",
                     "type": "ai.agentos.policy.check", "datacontenttype": "application/json",
                     "traceid": "abc", "data": {"decision": "deny"}}
    assert to_cloudevent(event)["id"] == "b1"


def test_non_json_data_is_carried_as_base64() -> None:
    headers = [*HEADERS[:4], ("content-type", b"application/octet-stream")]
    assert binary_to_structured(headers, b"\x00\x01", 1024)["data_base64"] == "AAE="


@pytest.mark.parametrize("headers", [
    [*HEADERS, ("ce_id", b"again")],
    [("ce_specversion", b"1.0"), ("ce_id", b"\xff\xfe")],
    [("ce_", b"x")],
])
def test_bad_headers_are_rejected(headers: list[tuple[str, bytes]]) -> None:
    with pytest.raises(InvalidEvent) as caught:
        binary_to_structured(headers, b"{}", 1024)
    assert caught.value.reason == "bad_headers"


def test_plain_records_are_not_binary_mode() -> None:
    assert not is_binary_mode([("agt-nonce", b"n"), ("content-type", b"application/json")])
