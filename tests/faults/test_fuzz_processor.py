"""Issue 8.7: property-based fuzzing of the decoder and the CloudEvent mapper.

`EventProcessor.process` gets arbitrary bytes, JSON objects shaped like events (every field
any JSON value, unknown fields, big integers, non-finite numbers, lone surrogates), mutated
real events, and arbitrary `ce_*` headers. It must never raise: the result is a rejection
with a reason, or a signed event whose body is strict JSON that verifies.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.model import Position, Record, Rejection, SignedEvent
from pipeline.processor import EventProcessor
from pipeline.signing.signers import HmacSigner
from tests.support.events import strict_json

KEY = bytes(range(32))
SIGNER = HmacSigner(KEY)
PROCESSOR = EventProcessor(SIGNER, 65_536)
EXAMPLES = [line.encode() for line in (Path(__file__).parents[2] / "examples" /
                                       "events.jsonl").read_text().splitlines()]
FIELDS = ("schema_version", "event_id", "occurred_at", "kind", "severity", "agent_id",
          "agent_did", "session_id", "action", "resource", "decision", "reason", "policy_name",
          "latency_ms", "trace_id", "span_id", "parent_span_id", "attributes")
CE_NAMES = ("ce_specversion", "ce_id", "ce_source", "ce_type", "ce_time", "ce_subject",
            "ce_", "CE_ID", "content-type", "ce_datacontenttype", "ce_partitionkey", "other")
# More examples when run by hand: GOVPIPE_FUZZ_EXAMPLES=20000.
EXAMPLES_PER_TEST = int(os.environ.get("GOVPIPE_FUZZ_EXAMPLES", "400"))
FUZZ = settings(max_examples=EXAMPLES_PER_TEST, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

texts = st.text(alphabet=st.characters(codec=None), max_size=40)  # surrogates included
scalars = (st.none() | st.booleans() | st.integers(min_value=-(2**70), max_value=2**70)
           | st.floats(allow_nan=True, allow_infinity=True) | texts)
json_values = st.recursive(scalars, lambda children: st.lists(children, max_size=4)
                           | st.dictionaries(texts, children, max_size=4), max_leaves=12)
timestamps = st.sampled_from(["2026-11-25T14:02:10.039522+00:00", "2026-11-25T14:02:10Z",
                              "2026-11-25", "noon", "2026-11-25T14:02:10", ""]) | texts
field_values: dict[str, st.SearchStrategy[Any]] = {
    name: json_values | texts for name in FIELDS}
field_values["occurred_at"] = timestamps | json_values
field_values["kind"] = st.sampled_from(["policy_check", "tool_call_blocked", "x"]) | json_values
field_values["event_id"] = texts | json_values
events = st.fixed_dictionaries({}, optional={**field_values, "extra": json_values})
cloudevents = st.fixed_dictionaries(
    {"specversion": st.sampled_from(["1.0", "0.3"]) | json_values},
    optional={"id": texts | json_values, "source": texts | json_values,
              "type": texts | json_values, "time": timestamps, "data": json_values,
              "agtsignature": texts, "ext": json_values})
headers = st.lists(st.tuples(st.sampled_from(CE_NAMES), st.binary(max_size=20)
                             | texts.map(lambda t: t.encode("utf-8", "surrogatepass"))),
                   max_size=6)


def _json_bytes(value: Any) -> bytes:
    """Serialized the lenient way producers do: NaN as NaN, surrogates as escapes."""
    return json.dumps(value, allow_nan=True).encode()


def check(value: bytes, record_headers: list[tuple[str, bytes]] | None = None) -> None:
    record = Record(value, Position("fuzz", 0, 0), headers=tuple(record_headers or ()))
    result = PROCESSOR.process(record)  # must not raise, whatever the input
    if isinstance(result, Rejection):
        assert result.reason
        assert result.reason.replace("_", "").isalnum()
        return
    assert isinstance(result, SignedEvent)
    body = strict_json(result.body)  # strict JSON: NaN/Infinity refused
    assert body["id"] == result.id
    assert SIGNER.verify(body), result.body[:500]


@FUZZ
@given(st.binary(max_size=2_000))
def test_arbitrary_bytes(value: bytes) -> None:
    check(value)


@FUZZ
@given(events)
def test_event_shaped_objects(event: dict[str, Any]) -> None:
    check(_json_bytes(event))


@FUZZ
@given(cloudevents)
def test_structured_cloudevents(event: dict[str, Any]) -> None:
    check(_json_bytes(event))


@FUZZ
@given(st.sampled_from(EXAMPLES), st.lists(st.tuples(st.integers(0, 2_000), st.binary(
    min_size=0, max_size=3)), min_size=1, max_size=4))
def test_mutated_real_events(example: bytes, edits: list[tuple[int, bytes]]) -> None:
    value = bytearray(example)
    for position, replacement in edits:
        at = position % (len(value) + 1)
        value[at:at + len(replacement) or at + 1] = replacement
    check(bytes(value))


@settings(FUZZ, suppress_health_check=list(HealthCheck))
@given(headers, st.binary(max_size=200) | json_values.map(_json_bytes))
def test_binary_mode_headers(record_headers: list[tuple[str, bytes]], value: bytes) -> None:
    check(value, record_headers)


@FUZZ
@given(st.from_regex(r"-?(0|[1-9][0-9]{0,30})(\.[0-9]{1,20})?([eE][+-]?[0-9]{1,4})?",
                     fullmatch=True), st.sampled_from(["latency_ms", "attributes"]))
def test_number_literals_of_any_size(literal: str, field: str) -> None:
    # The literal goes in as written: 1e400, 30-digit integers, long fractions.
    event = json.loads(EXAMPLES[0])
    event[field] = "@@"
    raw = _json_bytes(event).replace(b'"@@"', literal.encode() if field == "latency_ms"
                                     else b'{"n":' + literal.encode() + b"}")
    check(raw)
    result = PROCESSOR.process(Record(raw, Position("fuzz", 0, 0)))
    if isinstance(result, SignedEvent) and field == "attributes" and "." not in literal \
            and "e" not in literal.lower():
        assert strict_json(result.body)["data"]["n"] == int(literal)  # every digit kept
