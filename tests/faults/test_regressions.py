"""Regression tests for bugs the fault suite found, each at the smallest level that shows it."""

from __future__ import annotations

import asyncio
import hashlib
import json
from typing import ClassVar

import pytest
from aiokafka.errors import OutOfOrderSequenceNumber

from pipeline.cloudevents.codec import decode_object
from pipeline.cloudevents.mapping import InvalidEvent
from pipeline.deadletter.entry import DeadLetterEntry
from pipeline.deadletter.kafka import KafkaDeadLetter
from pipeline.model import Position, Record, Rejection, SignedEvent
from pipeline.processor import EventProcessor
from pipeline.signing.signers import HmacSigner
from sinks.base import SinkError
from sinks.kafka import KafkaSink
from tests.support.infra.kafka import KafkaBroker
from tests.support.kafka_clients import consume_all, create_topics

KEY = bytes(range(32))
EVENT = (b'{"event_id":"e1","kind":"policy_check","agent_id":"a",'
         b'"occurred_at":"2026-11-25T14:00:00+00:00",%s}')


def _process(value: bytes) -> SignedEvent | Rejection:
    processor = EventProcessor(HmacSigner(KEY), 1_048_576)
    return processor.process(Record(value, Position("t", 0, 0)))


@pytest.mark.parametrize("number", [b"1e400", b"-1e400", b"1.5e999"])
def test_a_number_beyond_double_range_is_rejected_not_signed_as_infinity(
        number: bytes) -> None:
    # Was: the slow decode path turned it into inf; the HMAC covered "Infinity" while the
    # body said null, so the event on the output never verified.
    with pytest.raises(InvalidEvent) as caught:
        decode_object(b'{"n": %s}' % number, 1024)
    assert caught.value.reason == "number_out_of_range"
    result = _process(EVENT % (b'"latency_ms":' + number))
    assert isinstance(result, Rejection)
    assert result.reason == "number_out_of_range"


@pytest.mark.parametrize("number", [b"1e-400", b"-2e-324", b"0." + b"0" * 400 + b"1"])
def test_a_number_below_the_smallest_double_is_rejected_not_signed_as_zero(
        number: bytes) -> None:
    # Was: orjson and float() both read it as 0.0 without an error: signed as 0.
    result = _process(EVENT % (b'"attributes":{"tiny":' + number + b"}"))
    assert isinstance(result, Rejection)
    assert result.reason == "number_out_of_range"


@pytest.mark.parametrize(("number", "value"), [(b"5e-324", 5e-324), (b"0.0e-999", 0.0),
                                               (b"1e-320", 1e-320)])
def test_tiny_doubles_and_zero_written_with_an_exponent_are_kept(
        number: bytes, value: float) -> None:
    result = _process(EVENT % (b'"attributes":{"tiny":' + number + b"}"))
    assert isinstance(result, SignedEvent)
    assert json.loads(result.body)["data"]["tiny"] == value


@pytest.mark.parametrize("number", [123456789012345678901234567890, 2**64, -(2**63) - 1,
                                    10**19 + 1])
def test_integers_beyond_64_bits_keep_every_digit(number: int) -> None:
    # Was: orjson parses them as floats without an error, so the signed output carried
    # 1.2345678901234568e+29 for 123456789012345678901234567890.
    assert decode_object(b'{"n": %d}' % number, 1024) == {"n": number}
    result = _process(EVENT % (b'"attributes":{"n":%d}' % number))
    assert isinstance(result, SignedEvent)
    body = json.loads(result.body)
    assert body["data"]["n"] == number
    assert type(body["data"]["n"]) is int
    assert HmacSigner(KEY).verify(body)


async def test_an_entry_too_big_for_a_kafka_record_does_not_wedge_the_dead_letter(
        own_broker: KafkaBroker) -> None:
    # Was: every `too_large` rejection (a value over max_event_bytes, 1 MiB by default)
    # made an entry over the producer's and the topic's 1 MB limit; the write failed with
    # MessageSizeTooLargeError forever, holding every later entry and every offset with it.
    await create_topics(own_broker.bootstrap, ["dlq"])
    value = b"x" * 2_000_000
    big = DeadLetterEntry(origin="source", reason="too_large", error="value is 2000000 bytes",
                          position=Position("in", 0, 7), value=value, key=b"k")
    small = DeadLetterEntry(origin="source", reason="invalid_json", error="not JSON",
                            position=Position("in", 0, 8), value=b"{oops")
    destination = KafkaDeadLetter({"bootstrap_servers": own_broker.bootstrap}, "dlq")
    try:
        await asyncio.wait_for(destination.write([big, small]), 30)
    finally:
        await destination.aclose()
    records = await consume_all(own_broker.bootstrap, "dlq", 2)
    first, second = (json.loads(r.value) for r in records)
    assert (first["reason"], first["source"]["offset"], first["truncated"]) == (
        "too_large", 7, True)
    assert first["value_bytes"] == len(value)
    assert first["value_sha256"] == hashlib.sha256(value).hexdigest()
    assert "value" not in first
    assert second["value"] == "{oops"
    assert "truncated" not in second


class _Batch(list[object]):
    def append(self, **record: object) -> object:  # type: ignore[override]
        super().append(record)
        return record


class _SequenceBrokenProducer:
    """A stand-in for AIOKafkaProducer: the first instance's sends fail the way an
    idempotent producer does once its sequence numbers are out of step with the broker
    (seen after a broker restart); later instances deliver."""

    instances: ClassVar[list[_SequenceBrokenProducer]] = []

    def __init__(self, **options: object) -> None:
        self.broken = not self.instances
        self.sent = 0
        self.stopped = False
        self.instances.append(self)

    async def start(self) -> None:
        return None

    async def partitions_for(self, topic: str) -> set[int]:
        return {0}

    def _partition(self, *args: object) -> int:
        return 0

    def create_batch(self) -> list[object]:
        return _Batch()

    async def send_batch(self, builder: object, topic: str, *,
                         partition: int) -> asyncio.Future[None]:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if self.broken:
            future.set_exception(OutOfOrderSequenceNumber())
        else:
            self.sent += 1
            future.set_result(None)
        return future

    async def stop(self) -> None:
        self.stopped = True


async def test_kafka_sink_recovers_from_an_out_of_order_sequence_number() -> None:
    # Was: OutOfOrderSequenceNumber is fatal to an idempotent producer, and the sink kept
    # that producer: after a broker restart every later batch failed the same way
    # (non-retriable), so the Kafka sink dead-lettered everything until govpipe restarted.
    _SequenceBrokenProducer.instances = []
    sink = KafkaSink("127.0.0.1:9", "out", timeout_s=2,
                     producer_class=_SequenceBrokenProducer)
    signed = _process(EVENT % b'"latency_ms":1')
    assert isinstance(signed, SignedEvent)
    with pytest.raises(SinkError) as caught:
        await sink.send([signed])
    assert caught.value.retriable  # the dispatcher retries the batch...
    await sink.send([signed])      # ...with a fresh producer, which delivers it
    first, second = _SequenceBrokenProducer.instances
    assert first.stopped
    assert second.sent == 1
    await sink.aclose()
