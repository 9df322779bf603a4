"""The spool sender's logic with fake producers: acknowledged entries leave the spool,
failed ones are sent again by a new producer with fresh signatures, a producer that cannot
start is retried, nothing is acknowledged that the broker did not acknowledge, and a record
Kafka refuses for good is set aside in rejected.jsonl instead of blocking the spool."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
from pathlib import Path
from typing import Any

import pytest
from aiokafka.errors import (
    CorruptRecordException,
    KafkaConnectionError,
    KafkaTimeoutError,
    MessageSizeTooLargeError,
    NotLeaderForPartitionError,
    OutOfOrderSequenceNumber,
    RecordListTooLargeError,
    RequestTimedOutError,
    TopicAuthorizationFailedError,
    UnknownError,
    UnknownTopicOrPartitionError,
)
from prometheus_client import CollectorRegistry

from pipeline.publisher.keys import RecordSigner
from pipeline.publisher.metrics import PublisherStats, attach_metrics
from pipeline.publisher.options import SpoolOptions
from pipeline.publisher.producer import ProducerLink
from pipeline.publisher.rejected import REJECTED_FILE, rejection_reason
from pipeline.publisher.sender import SpoolSender
from pipeline.publisher.spool import Spool
from tests.support.metrics import sample
from tests.support.waiting import eventually

KEY = bytes(range(32))


class FakeBroker:
    """What fake producers wrote, and how the next ones behave."""

    def __init__(self) -> None:
        self.written: list[tuple[bytes, dict[str, bytes]]] = []
        self.failing_starts = 0
        self.failing_sends: list[BaseException] = []  # one per producer, in order
        self.stalled_sends = 0  # producers whose sends never complete
        self.over_request_size: set[bytes] = set()  # values send() refuses, as aiokafka does
        self.over_topic_limit: set[bytes] = set()  # values that fail their whole batch
        self.producers: list[FakeProducer] = []

    def producer(self, **options: Any) -> FakeProducer:
        producer = FakeProducer(self)
        self.producers.append(producer)
        return producer


class FakeProducer:
    def __init__(self, broker: FakeBroker) -> None:
        self.broker = broker
        self.error = broker.failing_sends.pop(0) if broker.failing_sends else None
        self.stalled = broker.stalled_sends > 0
        broker.stalled_sends -= 1 if self.stalled else 0
        self.stopped = False
        self.batch: list[tuple[bytes, dict[str, bytes], asyncio.Future[Any]]] = []

    async def start(self) -> None:
        if self.broker.failing_starts:
            self.broker.failing_starts -= 1
            raise KafkaConnectionError("Unable to bootstrap")

    async def stop(self) -> None:
        self.stopped = True

    async def send(self, topic: str, value: bytes, key: bytes | None = None,
                   headers: list[tuple[str, bytes]] | None = None) -> asyncio.Future[Any]:
        if value in self.broker.over_request_size:
            raise MessageSizeTooLargeError("larger than max_request_size")
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        if self.stalled:
            return future
        if self.error is not None:
            future.set_exception(self.error)
        elif self.broker.over_topic_limit:
            # The broker answers for the batch: settle what this attempt sent at once.
            if not self.batch:
                asyncio.get_running_loop().call_soon(self.settle_batch)
            self.batch.append((value, dict(headers or []), future))
        else:
            self.broker.written.append((value, dict(headers or [])))
            future.set_result(None)
        return future

    def settle_batch(self) -> None:
        batch, self.batch = self.batch, []
        refused = any(value in self.broker.over_topic_limit for value, _, _ in batch)
        for value, headers, future in batch:
            if refused:
                future.set_exception(MessageSizeTooLargeError())
            else:
                self.broker.written.append((value, headers))
                future.set_result(None)


def value(n: int) -> bytes:
    return b'{"event_id":"%d"}' % n


async def drain(tmp_path: Path, broker: FakeBroker, count: int,
                registry: CollectorRegistry | None = None, **options: Any
                ) -> tuple[Spool, PublisherStats]:
    spool = Spool(SpoolOptions(tmp_path, **options), lambda: 0)
    spool.append([(b"k", value(n)) for n in range(count)])
    stats = PublisherStats()
    if registry is not None:
        attach_metrics(registry, "t", spool, stats, lambda: 0)
    link = ProducerLink({}, stats, producer_factory=broker.producer)
    sender = SpoolSender(spool, link, "t", RecordSigner(KEY, "s"), stats,
                         SpoolOptions(tmp_path, **options), lambda: 42)
    task = asyncio.create_task(sender.run())
    await asyncio.wait_for(sender.flushed(spool.end), 30)
    sender.stop()
    await asyncio.wait_for(task, 5)
    return spool, stats


async def test_entries_leave_the_spool_once_acknowledged(tmp_path: Path) -> None:
    broker = FakeBroker()
    spool, stats = await drain(tmp_path, broker, 7, batch_size=3)
    assert [value for value, _ in broker.written] == [b'{"event_id":"%d"}' % n
                                                      for n in range(7)]
    assert spool.counts().entries == 0
    assert (stats.sent, stats.resent) == (7, 0)


async def test_a_broken_producer_is_replaced_and_the_batch_sent_again_freshly_signed(
        tmp_path: Path) -> None:
    broker = FakeBroker()
    broker.failing_sends = [OutOfOrderSequenceNumber("after a broker restart")]
    spool, stats = await drain(tmp_path, broker, 4)
    assert len(broker.written) == 4
    assert spool.counts().acknowledged == 4
    assert broker.producers[0].stopped
    assert stats.replaced == {"out_of_order_sequence_number": 1}
    assert (stats.sent, stats.resent) == (8, 4)
    assert len({headers["agt-nonce"] for _, headers in broker.written}) == 4


async def test_no_acknowledgement_in_time_means_a_new_producer_and_a_resend(
        tmp_path: Path) -> None:
    broker = FakeBroker()
    broker.stalled_sends = 1
    spool, stats = await drain(tmp_path, broker, 2, resend_after_s=0.2)
    assert len(broker.written) == 2
    assert stats.replaced == {"no_acknowledgement": 1}
    assert spool.counts().acknowledged == 2


async def test_a_producer_that_cannot_start_is_retried(tmp_path: Path,
                                                       caplog: pytest.LogCaptureFixture) -> None:
    broker = FakeBroker()
    broker.failing_starts = 2
    await drain(tmp_path, broker, 1)
    assert len(broker.written) == 1
    assert caplog.text.count("cannot connect to Kafka") == 2


async def test_stopping_leaves_unacknowledged_entries_in_the_spool(tmp_path: Path) -> None:
    broker = FakeBroker()
    broker.stalled_sends = 1
    spool = Spool(SpoolOptions(tmp_path), lambda: 0)
    spool.append([(b"", b"{}")] * 3)
    stats = PublisherStats()
    sender = SpoolSender(spool, ProducerLink({}, stats, producer_factory=broker.producer), "t",
                         RecordSigner(None, ""), stats, SpoolOptions(tmp_path))
    task = asyncio.create_task(sender.run())
    await eventually(lambda: bool(broker.producers), 5)  # the batch is in flight
    sender.stop()
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert spool.counts().entries == 3


def rejected_lines(directory: Path) -> list[dict[str, Any]]:
    lines = (directory / REJECTED_FILE).read_text().splitlines()
    return [json.loads(line) for line in lines]


def identity_gap(registry: CollectorRegistry) -> float:
    """recovered + spooled - acknowledged - Σ rejected - spool_entries, from one scrape."""
    values: dict[str, float] = {}
    for family in registry.collect():
        for s in family.samples:
            values[s.name] = values.get(s.name, 0) + s.value
    return (values.get("govpipe_publisher_recovered_total", 0)
            + values.get("govpipe_publisher_spooled_total", 0)
            - values.get("govpipe_publisher_acknowledged_total", 0)
            - values.get("govpipe_publisher_rejected_total", 0)
            - values.get("govpipe_publisher_spool_entries", 0))


async def test_a_record_the_producer_refuses_as_too_large_is_set_aside_and_the_rest_flow(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    broker = FakeBroker()
    broker.over_request_size = {value(2)}
    registry = CollectorRegistry()
    with caplog.at_level(logging.ERROR):
        spool, _ = await drain(tmp_path, broker, 5, registry, batch_size=3)
    assert [v for v, _ in broker.written] == [value(n) for n in (0, 1, 3, 4)]
    [line] = rejected_lines(tmp_path)
    assert line["reason"] == "record_too_large"
    assert line["event_id"] == "2"
    assert line["agent_id"] == "k"
    assert line["topic"] == "t"
    assert line["rejected_at_ms"] == 42
    assert line["error"].startswith("MessageSizeTooLargeError")
    assert base64.b64decode(line["value_base64"]) == value(2)
    counts = spool.counts()
    assert (counts.acknowledged, counts.rejected, counts.entries) == (
        4, {"record_too_large": 1}, 0)
    assert sample(registry, "govpipe_publisher_rejected_total", topic="t",
                  reason="record_too_large") == 1
    assert sample(registry, "govpipe_publisher_acknowledged_total", topic="t") == 4
    assert identity_gap(registry) == 0
    assert "event 2 (agent k) refused by Kafka for good (record_too_large" in caplog.text
    assert KEY.hex() not in caplog.text
    assert base64.b64encode(KEY).decode() not in caplog.text


async def test_a_batch_the_broker_refuses_for_one_record_delivers_the_others(
        tmp_path: Path) -> None:
    """The broker fails a partition's whole batch; only the record refused alone is set
    aside, its neighbours are sent again alone and delivered."""
    broker = FakeBroker()
    broker.over_topic_limit = {value(1)}
    registry = CollectorRegistry()
    spool, stats = await drain(tmp_path, broker, 4, registry)
    assert sorted(v for v, _ in broker.written) == [value(n) for n in (0, 2, 3)]
    assert [line["event_id"] for line in rejected_lines(tmp_path)] == ["1"]
    assert spool.counts().rejected == {"record_too_large": 1}
    assert identity_gap(registry) == 0
    assert (stats.sent, stats.resent) == (4 + 4, 4)


async def test_a_spool_of_only_refused_records_empties(tmp_path: Path) -> None:
    broker = FakeBroker()
    broker.over_topic_limit = {value(0), value(1)}
    spool, _ = await drain(tmp_path, broker, 2)
    assert broker.written == []
    assert [line["event_id"] for line in rejected_lines(tmp_path)] == ["0", "1"]
    assert (spool.counts().entries, spool.counts().acknowledged) == (0, 0)


async def test_rejected_records_stay_in_the_spool_while_their_file_cannot_be_written(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    broker = FakeBroker()
    broker.over_request_size = {value(0)}
    (tmp_path / REJECTED_FILE).mkdir()  # opening it for writing fails
    spool = Spool(SpoolOptions(tmp_path), lambda: 0)
    spool.append([(b"", value(0)), (b"", value(1))])
    stats = PublisherStats()
    sender = SpoolSender(spool, ProducerLink({}, stats, producer_factory=broker.producer), "t",
                         RecordSigner(None, ""), stats, SpoolOptions(tmp_path))
    task = asyncio.create_task(sender.run())
    await eventually(lambda: f"cannot write {tmp_path / REJECTED_FILE}" in caplog.text, 10)
    assert spool.counts().entries == 2
    (tmp_path / REJECTED_FILE).rmdir()
    await asyncio.wait_for(sender.flushed(spool.end), 30)
    sender.stop()
    await asyncio.wait_for(task, 5)
    assert [line["event_id"] for line in rejected_lines(tmp_path)] == ["0"]
    assert spool.counts().rejected == {"record_too_large": 1}


@pytest.mark.parametrize(("error", "reason"), [
    (MessageSizeTooLargeError(), "record_too_large"),
    (RecordListTooLargeError(), "record_too_large"),
    (CorruptRecordException(), "invalid_record"),
    (TopicAuthorizationFailedError(), None),
    (UnknownTopicOrPartitionError(), None),
    (KafkaConnectionError(), None),
    (KafkaTimeoutError(), None),
    (RequestTimedOutError(), None),
    (NotLeaderForPartitionError(), None),
    (OutOfOrderSequenceNumber(), None),
    (UnknownError(), None),
])
def test_only_errors_of_the_record_itself_are_permanent(error: BaseException,
                                                         reason: str | None) -> None:
    assert rejection_reason(error) == reason
