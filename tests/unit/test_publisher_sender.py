"""The spool sender's logic with fake producers: acknowledged entries leave the spool,
failed ones are sent again by a new producer with fresh signatures, a producer that cannot
start is retried, and nothing is acknowledged that the broker did not acknowledge."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from aiokafka.errors import KafkaConnectionError, OutOfOrderSequenceNumber

from pipeline.publisher.keys import RecordSigner
from pipeline.publisher.metrics import PublisherStats
from pipeline.publisher.options import SpoolOptions
from pipeline.publisher.producer import ProducerLink
from pipeline.publisher.sender import SpoolSender
from pipeline.publisher.spool import Spool
from tests.support.waiting import eventually

KEY = bytes(range(32))


class FakeBroker:
    """What fake producers wrote, and how the next ones behave."""

    def __init__(self) -> None:
        self.written: list[tuple[bytes, dict[str, bytes]]] = []
        self.failing_starts = 0
        self.failing_sends: list[BaseException] = []  # one per producer, in order
        self.stalled_sends = 0  # producers whose sends never complete
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

    async def start(self) -> None:
        if self.broker.failing_starts:
            self.broker.failing_starts -= 1
            raise KafkaConnectionError("Unable to bootstrap")

    async def stop(self) -> None:
        self.stopped = True

    async def send(self, topic: str, value: bytes, key: bytes | None = None,
                   headers: list[tuple[str, bytes]] | None = None) -> asyncio.Future[Any]:
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        if self.stalled:
            return future
        if self.error is not None:
            future.set_exception(self.error)
        else:
            self.broker.written.append((value, dict(headers or [])))
            future.set_result(None)
        return future


async def drain(tmp_path: Path, broker: FakeBroker, count: int, **options: Any
                ) -> tuple[Spool, PublisherStats]:
    spool = Spool(SpoolOptions(tmp_path, **options), lambda: 0)
    spool.append([(b"k", b'{"event_id":"%d"}' % n) for n in range(count)])
    stats = PublisherStats()
    link = ProducerLink({}, stats, producer_factory=broker.producer)
    sender = SpoolSender(spool, link, "t", RecordSigner(KEY, "s"), stats,
                         SpoolOptions(tmp_path, **options))
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
