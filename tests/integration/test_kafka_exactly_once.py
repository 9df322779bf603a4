"""Exactly-once parts on the real broker.

- Zombie fencing: two committers (two replicas) both believe they own a partition and
  staged the same records. Whichever starts its producer last fences the other; each record
  is on the output once for a read_committed reader, and the fenced one counts nothing it
  did not write.
- Replay reads the dead-letter topic read_committed: entries of an aborted transaction do
  not go back on the input.
- A transaction's records go in record batches (`send_batches`), not one send each: the
  batches add their output partitions to the transaction, so a read_committed reader sees
  a committed transaction's records, in order on each partition, and none of an aborted
  one's."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from prometheus_client import CollectorRegistry

from pipeline.deadletter.kafka import KafkaDeadLetter
from pipeline.delivery.ledger import Ledger
from pipeline.exactly_once.batches import Sent, send_batches
from pipeline.exactly_once.committer import TransactionalCommitter
from pipeline.exactly_once.outbox import Staged
from pipeline.model import Position, SignedEvent
from tests.support.infra.kafka import KafkaBroker
from tests.support.kafka_clients import committed_offsets, consume_to_end, create_topics

pytestmark = pytest.mark.integration


class Replica:
    """A committer with its own ledger, and what it read and staged."""

    def __init__(self, bootstrap: str, group: str, topic: str) -> None:
        self.ledger = Ledger(CollectorRegistry(), ["kafka"], staging=("kafka",))
        self.committer = TransactionalCommitter(
            {"bootstrap_servers": bootstrap, "acks": "all"}, group, self.ledger)
        self.topic = topic

    def read(self, offsets: range) -> None:
        events = [SignedEvent(f"e{n}", {}, b"e%d" % n, Position(self.topic, 0, n))
                  for n in offsets]
        for event in events:
            self.ledger.tracker.track(event.position, 1)
        self.ledger.submitted("kafka", len(events))
        self.committer.stage_events("kafka", f"{self.topic}-out",
                                    [(e, (None, e.body, [])) for e in events])
        self.ledger.delivered("kafka", events)

    def counts(self) -> tuple[int, int, dict[str, int]]:
        sink = self.ledger.counts.sinks["kafka"]
        return sink.delivered, sink.in_flight, dict(sink.dropped)


@pytest.fixture
async def consumer(kafka_broker: KafkaBroker) -> AsyncIterator[tuple[AIOKafkaConsumer, str]]:
    group = f"fence-{uuid.uuid4().hex[:8]}"
    consumer = AIOKafkaConsumer(bootstrap_servers=kafka_broker.bootstrap, group_id=group,
                                enable_auto_commit=False)
    await consumer.start()
    try:
        yield consumer, group
    finally:
        await consumer.stop()


async def test_the_last_producer_started_fences_the_other(
        kafka_broker: KafkaBroker, consumer: tuple[AIOKafkaConsumer, str]) -> None:
    bootstrap, (reader, group) = kafka_broker.bootstrap, consumer
    topic = f"fence-in-{uuid.uuid4().hex[:8]}"
    await create_topics(bootstrap, [topic, f"{topic}-out"])
    tp = TopicPartition(topic, 0)
    zombie, owner = Replica(bootstrap, group, topic), Replica(bootstrap, group, topic)
    try:
        zombie.read(range(5))
        assert await zombie.committer.commit(reader, {tp: 5}) == [tp]
        # Both read 5-9: the zombie still thinks it owns the partition.
        zombie.read(range(5, 10))
        owner.read(range(5, 10))
        assert await owner.committer.commit(reader, {tp: 10}) == [tp]
        assert await zombie.committer.commit(reader, {tp: 10}) == []  # fenced
        assert zombie.committer.error is not None
        # Its next try starts a producer again (fencing the owner in turn), finds 10
        # committed, and writes nothing of 5-9.
        assert await zombie.committer.commit(reader, {tp: 10}) == [tp]
    finally:
        await zombie.committer.aclose()
        await owner.committer.aclose()
    records = await consume_to_end(bootstrap, f"{topic}-out", isolation_level="read_committed")
    assert sorted(r.value for r in records) == sorted(b"e%d" % n for n in range(10))
    assert (await committed_offsets(bootstrap, group)) == {0: 10}
    assert owner.counts() == (5, 0, {})
    assert zombie.counts() == (5, 0, {"committed_elsewhere": 5})


async def test_replay_reads_no_entry_of_an_aborted_transaction(
        kafka_broker: KafkaBroker) -> None:
    bootstrap, topic = kafka_broker.bootstrap, f"dlq-{uuid.uuid4().hex[:8]}"
    await create_topics(bootstrap, [topic])
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap,
                                transactional_id=f"t-{uuid.uuid4().hex[:8]}")
    await producer.start()
    try:
        await producer.begin_transaction()
        await (await producer.send(topic, b'{"id": "aborted", "origin": "source"}'))
        await producer.abort_transaction()
        async with producer.transaction():
            await (await producer.send(topic, b'{"id": "committed", "origin": "source"}'))
    finally:
        await producer.stop()
    store = KafkaDeadLetter({"bootstrap_servers": bootstrap}, topic)
    try:
        stored = await store.read()
    finally:
        await store.aclose()
    assert [entry["id"] for entry in stored.entries] == ["committed"]


async def test_record_batches_in_a_transaction_add_their_partitions(
        kafka_broker: KafkaBroker) -> None:
    bootstrap, topic = kafka_broker.bootstrap, f"batches-{uuid.uuid4().hex[:8]}"
    await create_topics(bootstrap, [topic], partitions=3)
    # 40 agents' keys over 3 partitions, 300 records of 100 bytes in batches of 1 KiB:
    # several batches per partition.
    items = [Staged(Position("in", 0, n), topic, b"agent-%d" % (n % 40),
                    b"%-100d" % n, []) for n in range(300)]
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, max_batch_size=1024,
                                transactional_id=f"t-{uuid.uuid4().hex[:8]}")
    await producer.start()
    try:
        for outcome in ("abort", "commit"):
            await producer.begin_transaction()
            sent: list[Sent] = []
            await send_batches(producer, items if outcome == "commit" else items[:50], (),
                               sent)
            for future, _ in sent:
                await future  # a partition not in the transaction: the broker refuses
            assert len(sent) > 3
            if outcome == "abort":
                await producer.abort_transaction()
            else:
                await producer.commit_transaction()
    finally:
        await producer.stop()
    records = await consume_to_end(bootstrap, topic, isolation_level="read_committed")
    assert len({r.partition for r in records}) == 3
    for partition in range(3):
        values = [r.value for r in records if r.partition == partition]
        assert values == [item.value for item in items  # all of it, in order, once
                          if item.key in {r.key for r in records if r.partition == partition}]
    assert len(records) == 300
