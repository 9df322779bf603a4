"""The accounting behind `govpipe audit`: every expected position delivered, dead-lettered
or missing; what else the output holds (duplicates, unknown positions, bad signatures)."""

from __future__ import annotations

import orjson

from pipeline.audit.report import account
from pipeline.audit.trail import Stream, TrailAudit
from pipeline.deadletter.entry import DeadLetterEntry
from pipeline.model import Position, Record, SignedEvent
from pipeline.processor import EventProcessor
from pipeline.signing.keys import HmacKey, KeySet
from pipeline.signing.signers import HmacSigner
from pipeline.signing.verification import Verifier
from sinks.kafka.messages import binary_message
from tests.support.events import event_value

KEY = bytes(range(32))
SIGNER = HmacSigner(KEY)
TOPIC = Stream("kafka", "in", 0)


def body(offset: int, value: bytes | None = None) -> bytes:
    record = Record(value or event_value(offset, "t"), Position("in", 0, offset))
    event = EventProcessor(SIGNER, 1 << 20).process(record)
    assert isinstance(event, SignedEvent)
    return event.body


def entry(offset: int) -> dict[str, object]:
    made = DeadLetterEntry(origin="source", reason="invalid_json", error="x",
                           position=Position("in", 0, offset), value=b"{")
    return dict(orjson.loads(made.to_json(signer=SIGNER)))


def audit() -> TrailAudit:
    return TrailAudit(Verifier(KeySet([HmacKey(KEY)])))


def test_every_position_is_delivered_dead_lettered_or_missing() -> None:
    trail = audit()
    trail.expect(TOPIC, range(10))
    for offset in (0, 1, 2, 3, 3, 4, 7):
        trail.output(body(offset), f"out {offset}")
    trail.deadletter(entry(8), "dlq 1")
    report = account(trail)
    assert report.summary() == ("input 10, delivered 6, dead-lettered 1, missing 3, "
                                "duplicates 1, bad signatures 0")
    assert list(report.detail_lines()) == [
        "duplicate in/0 offset 3: 2 copies, byte-identical",
        "missing in/0 offsets 5-6", "missing in/0 offset 9"]
    assert not report.clean


def test_retention_is_neither_missing_nor_unknown() -> None:
    trail = audit()
    trail.expect(TOPIC, range(5, 8), removed_below=5)
    for offset in range(2, 8):
        trail.output(body(offset), f"out {offset}")
    report = account(trail)
    assert (report.input, report.delivered, report.missing, report.unknown) == (3, 3, 0, 0)
    assert list(report.detail_lines()) == ["removed by retention in/0 offsets 0-4: not audited"]
    assert report.clean


def test_an_event_without_a_position_or_signature_proves_nothing() -> None:
    trail = audit()
    trail.expect(TOPIC, [0])
    unpositioned = {**orjson.loads(body(0))}
    for name in ("agttopic", "agtpartition", "agtoffset"):
        del unpositioned[name]
    trail.output(orjson.dumps(SIGNER.sign(unpositioned)), "out 1")
    trail.deadletter({**entry(0), "agtsignature": "AAAA"}, "dlq 1")
    trail.unreadable("dlq 2")
    report = account(trail)
    assert [f.kind for f in report.findings] == ["no_position", "bad_signature",
                                                 "bad_signature"]
    assert (report.missing, report.bad_signatures, report.clean) == (1, 2, False)


def test_an_unsigned_deadletter_entry_is_a_bad_signature() -> None:
    trail = audit()
    trail.expect(TOPIC, [0])
    made = DeadLetterEntry(origin="source", reason="r", error="e",
                           position=Position("in", 0, 0), value=b"{")
    trail.deadletter(orjson.loads(made.to_json()), "dlq 1")
    trail.deadletter({"replayed": "abc", "time": "t"}, "dlq 2")  # a marker: not an entry
    report = account(trail)
    assert [(f.kind, f.detail) for f in report.findings] == [("bad_signature", "unsigned")]
    assert report.missing == 1


def test_numbers_orjson_writes_differently_still_verify() -> None:
    # Integers beyond 64 bits and floats json.dumps writes as 1e+16: the canonical form.
    value = (b'{"schema_version":"1","event_id":"big","occurred_at":"2026-11-25T14:02:10Z",'
             b'"kind":"policy_check","agent_id":"a","attributes":{"n":%d,"f":1e16}}'
             % 2**70)
    trail = audit()
    trail.expect(TOPIC, [0])
    trail.output(body(0, value), "out 1")
    assert account(trail).summary().startswith("input 1, delivered 1, dead-lettered 0, "
                                               "missing 0")


def test_binary_mode_kafka_output_verifies() -> None:
    # ce_* headers carry every attribute as a string; the position attributes are strings
    # already, so the event read back is the one signed.
    event = EventProcessor(SIGNER, 1 << 20).process(
        Record(event_value(0, "t"), Position("in", 0, 0)))
    assert isinstance(event, SignedEvent)
    value, headers = binary_message(event.attributes)
    trail = audit()
    trail.expect(TOPIC, [0])
    trail.output(value or b"", "out 1", headers)
    trail.output(value or b"", "out 2", [*headers[:-1], (headers[-1][0], b"AAAA")])
    report = account(trail)
    assert (report.delivered, report.bad_signatures) == (1, 1)
