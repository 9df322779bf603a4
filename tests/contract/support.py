"""Signed events for sink tests: the examples, through the real EventProcessor."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

from pipeline.model import Position, Record, SignedEvent
from pipeline.processor import EventProcessor
from pipeline.signing.signers import HmacSigner

EXAMPLES = Path(__file__).parents[2] / "examples" / "events.jsonl"
TEST_KEY = b"govpipe-sink-tests-hmac-key-0123456789abcdef"


def example_lines() -> list[bytes]:
    """The raw JSON lines of examples/events.jsonl."""
    return [line for line in EXAMPLES.read_bytes().splitlines() if line.strip()]


def signed_examples(*, unique_ids: bool = False, key: bytes = TEST_KEY) -> list[SignedEvent]:
    """Every example signed with ``key``; ``unique_ids`` gives each a fresh event_id so
    tests sharing one peer can tell their own events apart."""
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
