"""Test inputs: the shipped Agent OS examples (raw, signed, numbered), small generated
events, garbage lines with the reason each is rejected for, and reading ids back."""

from __future__ import annotations

import json
import uuid
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from pipeline.model import Position, Record, SignedEvent
from pipeline.processor import EventProcessor
from pipeline.signing.signers import HmacSigner

EXAMPLES = Path(__file__).parents[2] / "examples" / "events.jsonl"
TEST_KEY = b"govpipe-sink-tests-hmac-key-0123456789abcdef"

GARBAGE: list[tuple[bytes, str]] = [
    (b"this is not json", "invalid_json"),
    (b'{"event_id": "t1", "kind": "policy_check", "occurred_at": "2026-11-25T14', "invalid_json"),
    (b"[1, 2, 3]", "not_object"),
    (b"\xff\xfe\xfd garbage \x00", "invalid_utf8"),
    (b'{"kind": "policy_check", "agent_id": "a", "occurred_at": "2026-11-25T14:00:00+00:00"}',
     "missing_event_id"),
    (b'{"event_id": "t2", "kind": "policy_check", "agent_id": "a", "occurred_at": "noon"}',
     "bad_timestamp"),
    (b'{"event_id": "t3", "kind": "policy_check", "occurred_at": "2026-11-25T14:00:00+00:00"}',
     "no_source"),
    (b'{"event_id": "t4", "kind": "policy_check", "agent_id": "a", "latency_ms": NaN, '
     b'"occurred_at": "2026-11-25T14:00:00+00:00"}', "invalid_json"),
    (b'{"hello": "world"}', "unknown_shape"),
]


def example_lines() -> list[bytes]:
    """The raw JSON lines of examples/events.jsonl."""
    return [line for line in EXAMPLES.read_bytes().splitlines() if line.strip()]


def signed_examples(*, unique_ids: bool = False, key: bytes = TEST_KEY) -> list[SignedEvent]:
    """Every example signed with ``key``, through the real EventProcessor; ``unique_ids``
    gives each a fresh event_id so tests sharing one peer can tell their own events apart."""
    processor = EventProcessor(HmacSigner(key), max_event_bytes=1 << 20)
    events: list[SignedEvent] = []
    for offset, line in enumerate(example_lines()):
        if unique_ids:
            obj = json.loads(line)
            obj["event_id"] = uuid.uuid4().hex
            line = json.dumps(obj).encode()
        result = processor.process(Record(line, Position("examples", 0, offset)))
        assert isinstance(result, SignedEvent), result
        events.append(result)
    return events


def oversized_event(size: int) -> SignedEvent:
    """One signed event whose body is over ``size`` bytes (a huge attribute)."""
    obj = json.loads(example_lines()[0])
    obj["event_id"] = uuid.uuid4().hex
    obj["attributes"]["padding"] = "x" * size
    processor = EventProcessor(HmacSigner(TEST_KEY), max_event_bytes=size * 2)
    result = processor.process(Record(json.dumps(obj).encode(), Position("big", 0, 0)))
    assert isinstance(result, SignedEvent), result
    return result


def numbered_events(count: int, prefix: str = "ev") -> list[bytes]:
    """`count` distinct Agent OS events, cycling through the shipped examples."""
    templates = [json.loads(line) for line in EXAMPLES.read_text(encoding="utf-8").splitlines()]
    events = []
    for number in range(count):
        event: dict[str, Any] = dict(templates[number % len(templates)])
        event["event_id"] = f"{prefix}-{number:07d}"
        events.append(json.dumps(event).encode())
    return events


def mixed_input() -> tuple[bytes, list[dict[str, Any]]]:
    """The examples with the GARBAGE lines spread among them, as one stdin payload, and the
    good events in order."""
    good = [json.loads(line) for line in EXAMPLES.read_text(encoding="utf-8").splitlines()]
    lines = [line.encode() for line in EXAMPLES.read_text(encoding="utf-8").splitlines()]
    for index, (raw, _) in enumerate(GARBAGE):
        lines.insert(3 + 4 * index, raw)
    return b"\n".join(lines) + b"\n", good


def event_value(number: int, prefix: str) -> bytes:
    """A small valid Agent OS event with id `<prefix>-<number>`; agent ids spread keys."""
    return (b'{"schema_version":"1","event_id":"%s-%08d","occurred_at":'
            b'"2026-11-25T14:02:10.039522+00:00","kind":"policy_check","severity":"info",'
            b'"agent_id":"agent-%d","action":"web_search","decision":"allow","reason":"ok",'
            b'"latency_ms":1.5,"attributes":{"n":%d}}'
            % (prefix.encode(), number, number % 50, number))


def event_ids(count: int, prefix: str) -> set[str]:
    """The ids of `event_value(n, prefix)` for n < count."""
    return {f"{prefix}-{number:08d}" for number in range(count)}


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not strict JSON")


def strict_json(raw: bytes | str) -> Any:
    """Parse with a parser that refuses NaN/Infinity (what a strict consumer does)."""
    return json.loads(raw, parse_constant=_refuse_constant)


def copies_by_id(bodies: Iterable[bytes]) -> dict[str, list[bytes]]:
    """The CloudEvents in `bodies` grouped by id: more than one copy is a redelivery."""
    copies: dict[str, list[bytes]] = defaultdict(list)
    for body in bodies:
        copies[strict_json(body)["id"]].append(body)
    return copies
