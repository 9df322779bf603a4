"""Every event names its source position inside the signature, and every dead-letter entry
names it too and is signed, so an auditor can check both with the same keys."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from pipeline.cloudevents.position import position_attributes, position_of
from pipeline.deadletter.entry import DeadLetterEntry
from pipeline.deadletter.file import FileDeadLetter
from pipeline.model import Position, Record, SignedEvent
from pipeline.processor import EventProcessor
from pipeline.signing.keys import HmacKey, KeySet
from pipeline.signing.signers import HmacSigner
from pipeline.signing.verification import Verifier
from tests.support.agent_os import agent_os_verify
from tests.support.events import event_value

KEY = bytes(range(32))
KAFKA = Position("governance.events", 3, 9_000_000_000, epoch=2)
LINE = Position("events.jsonl", 0, 12, kind="line")


def signed(record: bytes, position: Position) -> SignedEvent:
    event = EventProcessor(HmacSigner(KEY), 1 << 20).process(Record(record, position))
    assert isinstance(event, SignedEvent)
    return event


def test_a_kafka_event_names_topic_partition_and_offset_inside_the_signature() -> None:
    event = signed(event_value(1, "ev"), KAFKA)
    body = orjson.loads(event.body)
    assert (body["agttopic"], body["agtpartition"], body["agtoffset"]) == (
        "governance.events", "3", "9000000000")
    assert "agtinput" not in body
    # Agent OS's verifier covers every member but agtsignature: the position included.
    assert agent_os_verify(KEY, body)
    assert not agent_os_verify(KEY, {**body, "agtoffset": "9000000001"})
    assert position_of(body) == Position("governance.events", 3, 9_000_000_000)


def test_a_line_event_names_input_and_line() -> None:
    body = orjson.loads(signed(event_value(1, "ev"), LINE).body)
    assert (body["agtinput"], body["agtline"]) == ("events.jsonl", "12")
    assert "agttopic" not in body
    assert position_of(body) == LINE


def test_same_record_at_same_position_gives_the_same_bytes() -> None:
    record = event_value(1, "ev")
    assert signed(record, KAFKA).body == signed(record, Position(*KAFKA.as_dict().values())).body
    assert signed(record, KAFKA).body != signed(record, LINE).body


def test_a_forged_position_in_the_input_is_overwritten() -> None:
    forged = {**orjson.loads(signed(event_value(1, "ev"), KAFKA).body),
              "agtinput": "elsewhere", "agtline": "1"}
    body = orjson.loads(signed(orjson.dumps(forged), LINE).body)
    assert position_of(body) == LINE
    assert "agttopic" not in body
    assert "agtoffset" not in body


@pytest.mark.parametrize("attributes", [
    {}, {"agttopic": "t", "agtpartition": "0"}, {"agtinput": "x", "agtline": "-1"},
    {"agttopic": "t", "agtpartition": "0", "agtoffset": "1e3"},
    {"agttopic": "t", "agtpartition": True, "agtoffset": "1"},
])
def test_a_malformed_position_is_none(attributes: dict[str, object]) -> None:
    assert position_of(attributes) is None


async def test_dead_letter_entries_carry_the_position_and_are_signed(tmp_path: Path) -> None:
    store = FileDeadLetter(tmp_path, HmacSigner(KEY))
    await store.write([DeadLetterEntry(origin="source", reason="invalid_json", error="x",
                                       position=LINE, value=b"{nope")])
    [entry] = (await store.read()).entries
    assert entry["position"] == position_attributes(LINE) == {"agtinput": "events.jsonl",
                                                              "agtline": "12"}
    verifier = Verifier(KeySet([HmacKey(KEY)]))
    assert verifier.failure(entry) is None
    assert verifier.failure({**entry, "reason": "other"}) == "bad_signature"
    assert verifier.failure({**entry, "position": {**entry["position"], "agtline": "13"}}) \
        == "bad_signature"


def test_a_truncated_entry_is_signed_too() -> None:
    entry = DeadLetterEntry(origin="source", reason="too_large", error="big", position=KAFKA,
                            value=b"v" * 5000)
    summary = orjson.loads(entry.to_json(max_bytes=1000, signer=HmacSigner(KEY)))
    assert summary["truncated"] is True
    assert Verifier(KeySet([HmacKey(KEY)])).failure(summary) is None
