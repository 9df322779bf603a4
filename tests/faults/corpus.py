"""A corpus of bad Kafka records, one per kind, each with the rejection reason it must get."""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from typing import Any

TEN_MB = 10 * 1024 * 1024


@dataclass(frozen=True)
class BadRecord:
    kind: str
    value: bytes | None  # None: a tombstone
    reason: str
    headers: tuple[tuple[str, bytes], ...] = ()


def _event(**changes: Any) -> dict[str, Any]:
    event: dict[str, Any] = {
        "schema_version": "1", "event_id": "bad", "occurred_at": "2026-11-25T14:00:00+00:00",
        "kind": "policy_check", "severity": "info", "agent_id": "agent-x", "action": "a",
        "decision": "allow", "reason": "r", "latency_ms": 1.0, "attributes": {}}
    event.update(changes)
    return {k: v for k, v in event.items() if v is not _DELETE}


_DELETE = object()


def _dumps(value: Any) -> bytes:
    return json.dumps(value).encode()


def _wrong_types() -> list[BadRecord]:
    """Every governance-event field with a value of the wrong JSON type."""
    strings = ("severity", "agent_id", "agent_did", "session_id", "action", "resource",
               "decision", "reason", "policy_name", "trace_id", "span_id", "parent_span_id",
               "schema_version")
    records = [BadRecord(f"wrong_type_{name}", _dumps(_event(**{name: 12})), "bad_field")
               for name in strings]
    records += [
        BadRecord("wrong_type_event_id", _dumps(_event(event_id=7)), "missing_event_id"),
        BadRecord("wrong_type_kind", _dumps(_event(kind=["policy_check"])), "bad_field"),
        BadRecord("wrong_type_latency_ms", _dumps(_event(latency_ms="3 ms")), "bad_field"),
        BadRecord("wrong_type_latency_ms_bool", _dumps(_event(latency_ms=True)), "bad_field"),
        BadRecord("wrong_type_attributes", _dumps(_event(attributes=[1, 2])), "bad_field"),
        BadRecord("wrong_type_occurred_at", _dumps(_event(occurred_at=1764079200)),
                  "bad_timestamp"),
    ]
    return records


def _headers(**pairs: bytes) -> tuple[tuple[str, bytes], ...]:
    return tuple((name, value) for name, value in pairs.items())


def _binary_mode() -> list[BadRecord]:
    good = {"ce_specversion": b"1.0", "ce_id": b"bin-1", "ce_source": b"/s",
            "ce_type": b"ai.agentos.policy.check", "content-type": b"application/json"}
    data = b'{"action":"a"}'
    return [
        BadRecord("ce_duplicate_header", data, "bad_headers",
                  (*_headers(**good), ("ce_id", b"bin-2"))),
        BadRecord("ce_header_not_utf8", data, "bad_headers",
                  _headers(**{**good, "ce_source": b"\xff\xfe"})),
        BadRecord("ce_empty_attribute_name", data, "bad_headers",
                  (*_headers(**good), ("ce_", b"x"))),
        BadRecord("ce_wrong_specversion", data, "invalid_cloudevent",
                  _headers(**{**good, "ce_specversion": b"0.3"})),
        BadRecord("ce_missing_source", data, "invalid_cloudevent",
                  _headers(**{k: v for k, v in good.items() if k != "ce_source"})),
        BadRecord("ce_bad_time", data, "bad_timestamp",
                  _headers(**{**good, "ce_time": b"yesterday"})),
        BadRecord("ce_data_not_json", b"{oops", "invalid_json", _headers(**good)),
    ]


def bad_records() -> list[BadRecord]:
    garbage = random.Random(8).randbytes(4096)
    truncated = _dumps(_event())[:60]
    huge_map = _dumps(_event(attributes={f"k{n:07d}": n for n in range(120_000)}))
    return [
        BadRecord("invalid_utf8", b'{"event_id": "\xff\xfe"}', "invalid_utf8"),
        BadRecord("utf8_encoded_surrogate", b'{"event_id": "\xed\xa0\x80"}', "invalid_utf8"),
        BadRecord("binary_garbage", garbage, "invalid_utf8"),
        BadRecord("not_json", b"hello, world", "invalid_json"),
        BadRecord("truncated_json", truncated, "invalid_json"),
        BadRecord("deep_nesting", b'{"a":' * 100_000 + b"1" + b"}" * 100_000, "invalid_json"),
        BadRecord("nan", _dumps(_event()).replace(b"1.0", b"NaN"), "invalid_json"),
        BadRecord("infinity", _dumps(_event()).replace(b"1.0", b"Infinity"), "invalid_json"),
        BadRecord("negative_infinity", _dumps(_event()).replace(b"1.0", b"-Infinity"),
                  "invalid_json"),
        BadRecord("number_overflows_double", _dumps(_event()).replace(b"1.0", b"1e400"),
                  "number_out_of_range"),
        BadRecord("number_underflows_double", _dumps(_event()).replace(b"1.0", b"1e-400"),
                  "number_out_of_range"),
        BadRecord("bom", b"\xef\xbb\xbf" + _dumps(_event()), "invalid_json"),
        BadRecord("nul_bytes", b"\x00" * 64, "invalid_json"),
        BadRecord("control_char_in_string", b'{"event_id": "a\x01b"}', "invalid_json"),
        BadRecord("ten_megabytes", b'{"pad": "' + b"x" * TEN_MB + b'"}', "too_large"),
        BadRecord("huge_attribute_map", huge_map, "too_large"),
        BadRecord("lone_surrogate_escape", _dumps(_event(event_id="\ud800x")), "unserializable"),
        BadRecord("empty_value", b"", "empty"),
        BadRecord("whitespace_only", b" \r\n\t ", "empty"),
        BadRecord("tombstone", None, "empty"),
        BadRecord("json_array", b"[1, 2, 3]", "not_object"),
        BadRecord("json_string", b'"event"', "not_object"),
        BadRecord("json_null", b"null", "not_object"),
        BadRecord("big_int_top_level", b"123456789012345678901234567890", "not_object"),
        BadRecord("unknown_shape", b'{"hello": "world"}', "unknown_shape"),
        BadRecord("missing_event_id", _dumps(_event(event_id=_DELETE)), "missing_event_id"),
        BadRecord("empty_event_id", _dumps(_event(event_id="")), "missing_event_id"),
        BadRecord("no_source", _dumps(_event(agent_id=_DELETE)), "no_source"),
        BadRecord("timestamp_not_rfc3339", _dumps(_event(occurred_at="noon")), "bad_timestamp"),
        BadRecord("timestamp_without_offset", _dumps(_event(occurred_at="2026-11-25T14:00:00")),
                  "bad_timestamp"),
        BadRecord("timestamp_date_only", _dumps(_event(occurred_at="2026-11-25")),
                  "bad_timestamp"),
        BadRecord("cloudevent_wrong_specversion",
                  _dumps({"specversion": "0.3", "id": "c", "source": "/s", "type": "t"}),
                  "invalid_cloudevent"),
        BadRecord("cloudevent_missing_id",
                  _dumps({"specversion": "1.0", "source": "/s", "type": "t"}),
                  "missing_event_id"),
        BadRecord("cloudevent_id_not_string",
                  _dumps({"specversion": "1.0", "id": 5, "source": "/s", "type": "t"}),
                  "missing_event_id"),
        *_wrong_types(),
        *_binary_mode(),
    ]
