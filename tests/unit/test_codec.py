"""Decoding of raw record values: strict JSON objects or a named rejection."""

from __future__ import annotations

import json
import tracemalloc

import pytest

from pipeline.cloudevents.codec import decode_object, encode
from pipeline.cloudevents.mapping import InvalidEvent


@pytest.mark.parametrize(("raw", "reason"), [
    (b"", "empty"),
    (b"   ", "empty"),
    (b"\xff\xfe{}", "invalid_utf8"),
    (b"{not json", "invalid_json"),
    (b'{"a": NaN}', "invalid_json"),
    (b'{"a": Infinity}', "invalid_json"),
    (b'{"a": 1', "invalid_json"),
    (b"[1, 2]", "not_object"),
    (b'"text"', "not_object"),
    (b"[" * 5000 + b"]" * 5000, "invalid_json"),
    (b'{"x": "' + b"a" * 30000 + b'"}', "too_large"),
])
def test_bad_values_are_rejected_with_a_reason(raw: bytes, reason: str) -> None:
    with pytest.raises(InvalidEvent) as caught:
        decode_object(raw, max_bytes=20_000)
    assert caught.value.reason == reason


def test_big_integers_survive_decode_and_encode() -> None:
    big = 2**80
    value = decode_object(b'{"n": %d}' % big, max_bytes=1024)
    assert value == {"n": big}
    assert json.loads(encode(value)) == {"n": big}


def test_encode_is_strict_compact_utf8() -> None:
    assert encode({"a": "é", "b": [1, 2.5]}) == '{"a":"é","b":[1,2.5]}'.encode()


def test_encoded_bodies_hold_no_more_memory_than_their_bytes() -> None:
    """Signed bodies wait in sink queues; orjson's own result keeps its ~8 KiB buffer."""
    values = [{"id": f"e{n}", "data": {"text": "x" * 900, "n": n}} for n in range(500)]
    tracemalloc.start()
    try:
        before = tracemalloc.take_snapshot()
        bodies = [encode(value) for value in values]
        after = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
    held = sum(stat.size_diff for stat in after.compare_to(before, "filename"))
    payload = sum(len(body) for body in bodies)
    assert held < 1.5 * payload, (held, payload)
