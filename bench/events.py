"""Benchmark input: the Agent OS examples (mixed kinds, ~500 bytes) with fresh ids."""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any

import orjson

EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "events.jsonl"
SENT_ATTRIBUTE = "bench_sent_ms"
I_JSON_MAX = 2**53 - 1


def templates() -> list[dict[str, Any]]:
    """The governance events of examples/events.jsonl (all twelve kinds) that every
    scenario turns into an event: Ed25519 (scenario d) refuses integers beyond I-JSON's
    ±(2**53 - 1), and a refused event never reaches the output the bench waits on."""
    lines = EXAMPLES.read_bytes().splitlines()
    return [shape for line in lines if line.strip()
            if _within_i_json(shape := orjson.loads(line))]


def _within_i_json(value: Any) -> bool:
    if isinstance(value, dict):
        return all(_within_i_json(item) for item in value.values())
    if isinstance(value, list):
        return all(_within_i_json(item) for item in value)
    return not isinstance(value, int) or abs(value) <= I_JSON_MAX


def event_values(count: int) -> list[bytes]:
    """``count`` serialized events cycling through the examples, each with a unique id."""
    shapes = templates()
    return [orjson.dumps(dict(shapes[i % len(shapes)], event_id=uuid.uuid4().hex))
            for i in range(count)]


def stamped_value(shape: dict[str, Any]) -> bytes:
    """One event from ``shape`` with a fresh id and its send time (ms) in its attributes."""
    attributes = dict(shape.get("attributes") or {}, **{SENT_ATTRIBUTE: time.time() * 1000})
    return orjson.dumps(dict(shape, event_id=uuid.uuid4().hex, attributes=attributes))


def sent_ms(value: bytes) -> float | None:
    """The send time embedded by `stamped_value`, read back from an output record: a
    CloudEvent (attributes are spread into ``data``) or the passed-through event."""
    obj = orjson.loads(value)
    if "resourceLogs" in obj:
        return _otlp_sent_ms(obj)
    data = obj.get("data", obj.get("attributes"))
    sent = data.get(SENT_ATTRIBUTE) if isinstance(data, dict) else None
    return float(sent) if isinstance(sent, int | float) else None


def _otlp_sent_ms(request: dict[str, Any]) -> float | None:
    """The send time in an OTLP/JSON logs request of one event (bench scenario q: the
    event's fields parsed into the log record's attributes, `attributes` a kvlist)."""
    for resource in request["resourceLogs"]:
        for scope in resource.get("scopeLogs", []):
            for record in scope.get("logRecords", []):
                for item in record.get("attributes", []):
                    if item["key"] != "attributes":
                        continue
                    for inner in item["value"].get("kvlistValue", {}).get("values", []):
                        if inner["key"] == SENT_ATTRIBUTE:
                            return float(next(iter(inner["value"].values())))
    return None
