"""The exactly-once committer with fake producers: what a transaction writes, and how the
counters behave when one aborts, when its outcome is unknown, when another owner
committed first, and when the partition is given up (also through the Kafka source's
revocation)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Collection, Mapping
from typing import Any

import pytest
from aiokafka import TopicPartition
from aiokafka.errors import (
    KafkaConnectionError,
    MessageSizeTooLargeError,
    ProducerFenced,
    TopicAuthorizationFailedError,
)
from prometheus_client import CollectorRegistry

from pipeline.cloudevents.codec import encode
from pipeline.daemon import commit_due
from pipeline.deadletter.entry import DeadLetterEntry
from pipeline.deadletter.kafka import StagedKafkaDeadLetter
from pipeline.delivery.ledger import Ledger
from pipeline.exactly_once.committer import TransactionalCommitter
from pipeline.exactly_once.outbox import Staged
from pipeline.kafka_limits import RecordLimit
from pipeline.model import Position, SignedEvent
from pipeline.settings import ConfigError, SourceSettings, load_settings
from pipeline.sources.kafka import KafkaSource
from sinks.base import SinkError
from sinks.kafka.staging import StagingKafkaSink

TP = TopicPartition("in", 0)


async def unreadable(options: Mapping[str, Any], topic: str) -> int:
    raise TopicAuthorizationFailedError(topic)


class Broker:
    """What the fake producers wrote and committed, and the group's committed offset."""

    def __init__(self) -> None:
        self.committed: dict[TopicPartition, int] = {}
        self.records: list[bytes] = []  # records of committed transactions
        self.producers: list[FakeProducer] = []
        # How the next commit fails: "abort": lost; "unknown": committed; both answered by
        # a connection error. "timeout": committed, no answer ever. "fenced": lost, the
        # producer fenced. "down": lost, and the broker stays away (`down`).
        self.fail_next_commit: str | None = None
        self.down = False  # no producer starts


class FakeBatch:
    """A record batch of at most `size` bytes of values; its first record always fits."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.values: list[bytes] = []
        self.closed = False

    def append(self, *, value: bytes, **_: Any) -> object | None:
        if self.closed or (self.values and sum(map(len, self.values)) + len(value) > self.size):
            return None
        self.values.append(value)
        return object()

    def close(self) -> None:
        self.closed = True


class FakeProducer:
    def __init__(self, broker: Broker, **options: Any) -> None:
        self.broker, self.options = broker, options
        self.open: list[bytes] = []
        self.batches: list[tuple[str, int, list[bytes]]] = []  # every batch sent
        self.unsent = self.most_unsent = 0  # batches built and not yet sent
        self.offsets: dict[TopicPartition, int] = {}
        self.stopped = False
        broker.producers.append(self)

    async def start(self) -> None:
        if self.broker.down:
            raise KafkaConnectionError("no broker")

    async def stop(self) -> None:
        self.stopped = True

    async def begin_transaction(self) -> None:
        self.open, self.offsets = [], {}

    async def partitions_for(self, topic: str) -> set[int]:
        return {0, 1}

    def _partition(self, topic: str, partition: int | None, key: bytes | None, *_: Any
                   ) -> int:
        return len(key or b"") % 2  # keyed records: partition 1 for keys of odd length

    def create_batch(self) -> FakeBatch:
        self.unsent += 1
        return FakeBatch(self.options.get("max_batch_size", 1_048_576))

    async def send_batch(self, batch: FakeBatch, topic: str, *, partition: int
                         ) -> asyncio.Future[None]:
        assert batch.closed, "a batch sent open could take records sent after it"
        self.most_unsent = max(self.most_unsent, self.unsent)
        self.unsent -= 1
        self.batches.append((topic, partition, batch.values))
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if error := self.refusal(batch):
            future.set_exception(error)
        else:
            self.open += batch.values
            future.set_result(None)
        return future

    def refusal(self, batch: FakeBatch) -> BaseException | None:
        """Why the broker refuses `batch`, if it does."""
        return None

    async def send_offsets_to_transaction(self, offsets: dict[TopicPartition, int],
                                          group_id: str) -> None:
        self.offsets = dict(offsets)

    async def commit_transaction(self) -> None:
        failure, self.broker.fail_next_commit = self.broker.fail_next_commit, None
        if failure in (None, "unknown", "timeout"):
            self.broker.records += self.open
            self.broker.committed.update(self.offsets)
        if failure == "timeout":
            await asyncio.Event().wait()  # until the committer's deadline
        if failure == "fenced":
            raise ProducerFenced()
        self.broker.down = failure == "down"
        if failure is not None:
            raise KafkaConnectionError("broker went away")

    async def abort_transaction(self) -> None:
        self.open = []


class FakeConsumer:
    def __init__(self, broker: Broker) -> None:
        self.broker = broker

    async def committed(self, tp: TopicPartition) -> int | None:
        return self.broker.committed.get(tp)

    def assignment(self) -> set[TopicPartition]:
        return {TP}


def setup() -> tuple[Broker, Ledger, TransactionalCommitter, FakeConsumer]:
    broker, ledger, committer = setup_with(FakeProducer)
    return broker, ledger, committer, FakeConsumer(broker)


def setup_with(producer: type[FakeProducer], **options: Any
               ) -> tuple[Broker, Ledger, TransactionalCommitter]:
    broker = Broker()
    ledger = Ledger(CollectorRegistry(), ["kafka"], staging=("kafka",),
                    deadletters_staged=True)
    committer = TransactionalCommitter(
        {}, "g", ledger, producer_class=lambda **o: producer(broker, **o), **options)
    return broker, ledger, committer


def read(ledger: Ledger, committer: TransactionalCommitter, offsets: range,
         epoch: int = 0) -> None:
    """Records at `offsets` read, handed to the Kafka sink and staged."""
    events = [SignedEvent(f"e{n}", {}, b"e%d" % n, Position("in", 0, n, epoch))
              for n in offsets]
    ledger.ingest(events)  # read: one part per record, the Kafka sink's
    ledger.submitted("kafka", len(events))
    committer.stage_events("kafka", "out", [(e, (None, e.body, [])) for e in events])
    ledger.delivered("kafka", events)  # staged: settles, counts nothing yet


def signed(attributes: dict[str, Any], position: Position) -> SignedEvent:
    """An event as the processor makes it: its body is its attributes, encoded."""
    return SignedEvent(attributes["id"], attributes, encode(attributes), position)


def counts(ledger: Ledger) -> tuple[int, int, dict[str, int]]:
    """(delivered, in flight, dropped) of the Kafka sink; the identities hold throughout."""
    assert not ledger.counts.broken()
    sink = ledger.counts.sinks["kafka"]
    return sink.delivered, sink.in_flight, dict(sink.dropped)


async def test_a_transaction_writes_the_staged_records_and_the_offset() -> None:
    broker, ledger, committer, consumer = setup()
    read(ledger, committer, range(3))
    committer.stage([Staged(Position("in", 0, 1), "dlq", None, b"entry1", [],
                            origin="otlp")])
    assert counts(ledger) == (0, 3, {})  # staged, not yet delivered
    assert await committer.commit(consumer, {TP: 3}) == [TP]
    assert broker.records == [b"e0", b"e1", b"e2", b"entry1"]  # a batch per topic
    assert broker.committed == {TP: 3}
    assert counts(ledger) == (3, 0, {})
    assert ledger.dead_letters == {"otlp": 1}
    assert broker.producers[0].options["transactional_id"] == "govpipe-g-in-0"


async def test_an_aborted_transaction_is_sent_again_and_counted_once() -> None:
    broker, ledger, committer, consumer = setup()
    read(ledger, committer, range(2))
    broker.fail_next_commit = "abort"
    assert await committer.commit(consumer, {TP: 2}) == []
    assert counts(ledger) == (0, 2, {})
    assert broker.producers[0].stopped is False  # retired; closed at the next commit
    assert await committer.commit(consumer, {TP: 2}) == [TP]
    assert broker.producers[0].stopped
    assert len(broker.producers) == 2
    assert broker.records == [b"e0", b"e1"]
    assert counts(ledger) == (2, 0, {})


async def test_a_transaction_of_unknown_outcome_that_committed_is_not_written_again(
        ) -> None:
    broker, ledger, committer, consumer = setup()
    read(ledger, committer, range(2))
    broker.fail_next_commit = "unknown"  # committed, but the answer was lost
    assert await committer.commit(consumer, {TP: 2}) == []
    read(ledger, committer, range(2, 4))
    assert await committer.commit(consumer, {TP: 4}) == [TP]
    assert broker.records == [b"e0", b"e1", b"e2", b"e3"]
    assert counts(ledger) == (4, 0, {})


async def test_records_another_owner_committed_are_dropped_not_written() -> None:
    broker, ledger, committer, consumer = setup()
    broker.committed[TP] = 2  # a zombie's last transaction got there first
    read(ledger, committer, range(3))
    assert await committer.commit(consumer, {TP: 3}) == [TP]
    assert broker.records == [b"e2"]
    assert counts(ledger) == (1, 0, {"committed_elsewhere": 2})


async def test_a_partition_given_up_drops_what_it_staged_and_what_comes_late() -> None:
    broker, ledger, committer, consumer = setup()
    read(ledger, committer, range(2))
    ledger.tracker.forget([("in", 0)])
    committer.forget({TP: 1})
    read(ledger, committer, range(2, 3), epoch=0)  # from before the revocation
    assert counts(ledger) == (0, 0, {"partition_revoked": 3})
    read(ledger, committer, range(2, 4), epoch=1)  # the partition came back
    assert await committer.commit(consumer, {TP: 4}) == [TP]
    assert broker.records == [b"e2", b"e3"]


@pytest.mark.parametrize(("overrides", "problem"), [
    ({"GOVPIPE_SOURCE__KIND": "stdin"}, "source.kind"),
    ({"GOVPIPE_SOURCE__KIND": "kafka", "GOVPIPE_DEADLETTER__KIND": "file"},
     "deadletter.kind"),
    ({"GOVPIPE_SOURCE__KIND": "kafka",
      "GOVPIPE_SINKS__KAFKA__CONNECTION__BOOTSTRAP_SERVERS": "other:9092"},
     "[sinks.kafka.connection]"),
])
def test_exactly_once_is_refused_where_it_cannot_hold(overrides: dict[str, str],
                                                       problem: str) -> None:
    environ = {"GOVPIPE_SINKS__KAFKA__ENABLED": "true",
               "GOVPIPE_SINKS__KAFKA__EXACTLY_ONCE": "true", **overrides}
    with pytest.raises(ConfigError, match=r"sinks\.kafka\.exactly_once") as raised:
        load_settings(None, environ)
    assert problem in str(raised.value)


async def test_the_staged_backlog_is_bounded_until_a_transaction_commits() -> None:
    broker = Broker()
    ledger = Ledger(CollectorRegistry(), ["kafka"], staging=("kafka",))
    committer = TransactionalCommitter({}, "g", ledger, max_staged=2,
                                       producer_class=lambda **o: FakeProducer(broker, **o))
    sink = StagingKafkaSink("out", lambda topic, messages: committer.stage_events(
        "kafka", topic, messages), room=committer.wait_for_room)
    events = [SignedEvent(f"e{n}", {}, b"e%d" % n, Position("in", 0, n)) for n in range(3)]
    for event in events:
        ledger.tracker.track(event.position, 1)
    ledger.submitted("kafka", 3)
    await sink.send(events[:2])
    ledger.delivered("kafka", events[:2])
    blocked = asyncio.ensure_future(sink.send(events[2:]))
    await asyncio.sleep(0)
    assert not blocked.done()  # two staged: the third waits
    assert await committer.commit(FakeConsumer(broker), {TP: 2}) == [TP]
    await asyncio.wait_for(blocked, 1)
    assert broker.records == [b"e0", b"e1"]


async def test_an_event_over_the_topic_limit_fails_alone_and_is_not_staged() -> None:
    staged: list[tuple[SignedEvent, object]] = []

    async def limit() -> int:
        return 4096 - 512

    sink = StagingKafkaSink("out", lambda topic, messages: staged.extend(messages),
                            max_record_bytes=limit)
    events = [SignedEvent("small", {}, b"{}", Position("in", 0, 0)),
              SignedEvent("big", {}, b"x" * 4_000, Position("in", 0, 1)),
              SignedEvent("small2", {}, b"{}", Position("in", 0, 2))]
    with pytest.raises(SinkError) as raised:
        await sink.send(events)
    assert (raised.value.retriable, raised.value.reason) == (
        False, "message_size_too_large_error")
    assert [e.id for e in raised.value.only or []] == ["big"]
    assert [event.id for event, _ in staged] == ["small", "small2"]


async def test_producers_keep_their_record_batches_within_the_smallest_known_topic_limit(
        ) -> None:
    # Was: batches of record_batch_bytes (1 MiB) to a topic of max.message.bytes 4096,
    # which the broker refuses whole though each record fits: every transaction failed
    # once, then sent each of its records in a batch of its own, past the commit timeout
    # once a transaction held a few thousand.
    async def topic_limit(options: Mapping[str, Any], topic: str) -> int:
        return {"out": 4096, "dlq": 8192}[topic]

    broker, ledger, _ = setup_with(FakeProducer)
    committer = TransactionalCommitter(
        {"max_batch_size": 1_048_576}, "g", ledger,
        producer_class=lambda **o: FakeProducer(broker, **o))
    out, dlq = (RecordLimit({}, topic, describe=topic_limit) for topic in ("out", "dlq"))
    committer.limit_batches(out)
    committer.limit_batches(dlq)

    async def batch_size_of_a_new_producer(epoch: int) -> int:
        committer.forget({TP: epoch})  # the partition's next commit starts a producer
        read(ledger, committer, range(epoch, epoch + 1), epoch=epoch)
        assert await committer.commit(FakeConsumer(broker), {TP: epoch + 1}) == [TP]
        size: int = broker.producers[-1].options["max_batch_size"]
        return size

    assert await batch_size_of_a_new_producer(0) == 1_048_576  # no limit known yet
    await dlq.get()  # learned when the store first stages an entry
    assert await batch_size_of_a_new_producer(1) == 8192 - 512
    await out.get()  # learned when the sink first stages
    assert await batch_size_of_a_new_producer(2) == 4096 - 512  # the smaller of the two
    assert counts(ledger) == (3, 0, {})


class SlowCommitProducer(FakeProducer):
    """Its commit waits for `release`: the partition can be given up meanwhile."""

    release: asyncio.Event
    committing: asyncio.Event

    async def commit_transaction(self) -> None:
        self.committing.set()
        await self.release.wait()
        await super().commit_transaction()


async def given_up_while_committing(
        ) -> tuple[Broker, Ledger, asyncio.Task[Collection[TopicPartition]]]:
    """Five records read, a commit up to offset 3 under way (its transaction committing,
    `SlowCommitProducer.release` ends it), and the partition given up meanwhile (an offset
    reset or a revocation)."""
    SlowCommitProducer.release, SlowCommitProducer.committing = asyncio.Event(), asyncio.Event()
    broker, ledger, committer = setup_with(SlowCommitProducer)
    read(ledger, committer, range(5))
    committing = asyncio.create_task(committer.commit(FakeConsumer(broker), {TP: 3}))
    await SlowCommitProducer.committing.wait()
    committer.forget({TP: 1})
    return broker, ledger, committing


async def test_a_transaction_that_commits_after_the_partition_is_given_up_counts_delivered(
        ) -> None:
    # The records its transaction wrote are on the output topic and past the committed
    # offset: no next owner writes them, so counting them dropped would be a miscount.
    broker, ledger, committing = await given_up_while_committing()
    assert counts(ledger) == (0, 3, {"partition_revoked": 2})  # 3 and 4: never written
    SlowCommitProducer.release.set()
    await committing
    assert broker.records == [b"e0", b"e1", b"e2"]
    assert broker.committed == {TP: 3}
    assert counts(ledger) == (3, 0, {"partition_revoked": 2})


async def test_a_transaction_fenced_after_the_partition_is_given_up_counts_revoked(
        ) -> None:
    broker, ledger, committing = await given_up_while_committing()
    broker.fail_next_commit = "fenced"  # known aborted
    SlowCommitProducer.release.set()
    await committing
    assert broker.records == []
    assert broker.committed == {}
    assert counts(ledger) == (0, 0, {"partition_revoked": 5})  # the next owner writes all


async def test_a_transaction_of_unknown_outcome_after_the_partition_is_given_up_says_so(
        ) -> None:
    # Was: counted partition_revoked, though it committed: the records are on the output
    # topic and past the committed offset, so no next owner writes (or counts) them.
    broker, ledger, committing = await given_up_while_committing()
    broker.fail_next_commit = "unknown"
    SlowCommitProducer.release.set()
    assert await committing == []
    assert broker.records == [b"e0", b"e1", b"e2"]
    assert counts(ledger) == (0, 0, {"transaction_outcome_unknown": 3,
                                     "partition_revoked": 2})


class SlowBeginProducer(FakeProducer):
    """Its transaction begins (fencing, a producer id) only at `release`."""

    release: asyncio.Event
    began: asyncio.Event

    async def begin_transaction(self) -> None:
        self.began.set()
        await self.release.wait()
        await super().begin_transaction()


async def test_a_partition_given_up_while_its_transaction_begins_commits_nothing() -> None:
    # Its records left the outbox, counted for the next owner: committing the offset past
    # them would lose them.
    SlowBeginProducer.release, SlowBeginProducer.began = asyncio.Event(), asyncio.Event()
    broker, ledger, committer = setup_with(SlowBeginProducer)
    read(ledger, committer, range(5))
    committing = asyncio.create_task(committer.commit(FakeConsumer(broker), {TP: 3}))
    await SlowBeginProducer.began.wait()
    committer.forget({TP: 1})
    SlowBeginProducer.release.set()
    assert await committing == []
    assert broker.records == []
    assert broker.committed == {}
    assert counts(ledger) == (0, 0, {"partition_revoked": 5})


async def test_dead_letter_entries_wait_for_room_in_the_transactions() -> None:
    # Transactions that keep failing while most input is rejected: entries wait in the
    # writer (whose bound pauses the source), the staged records do not grow without end.
    staged: list[Staged] = []
    room = asyncio.Event()
    store = StagedKafkaDeadLetter({}, "dlq", staged.extend, room=room.wait)
    entry = DeadLetterEntry("source", "invalid_json", "not JSON", Position("in", 0, 4),
                            value=b"{")
    writing = asyncio.create_task(store.write([entry]))
    await asyncio.sleep(0)
    assert not staged
    assert not writing.done()
    room.set()
    await writing
    assert [item.position.offset for item in staged] == [4]


class SlowStartProducer(FakeProducer):
    release: asyncio.Event
    starting: asyncio.Event

    async def start(self) -> None:
        self.starting.set()
        await self.release.wait()


async def test_a_partition_given_up_before_its_producer_started_commits_nothing() -> None:
    # The new producer is the partition's current one, yet the offset `due` was worked out
    # before the partition was given up: committing it would skip records now counted for
    # the next owner.
    SlowStartProducer.release, SlowStartProducer.starting = asyncio.Event(), asyncio.Event()
    broker, ledger, committer = setup_with(SlowStartProducer)
    read(ledger, committer, range(5))
    committing = asyncio.create_task(committer.commit(FakeConsumer(broker), {TP: 3}))
    await SlowStartProducer.starting.wait()
    committer.forget({TP: 1})
    SlowStartProducer.release.set()
    assert await committing == []
    assert broker.committed == {}
    assert counts(ledger) == (0, 0, {"partition_revoked": 5})
    assert committer.error is None  # a partition no longer ours is no failure of ours


class SizeNotingProducer(FakeProducer):
    sizes: list[int]

    async def commit_transaction(self) -> None:
        self.sizes.append(len(self.open))
        await super().commit_transaction()


async def test_a_backlog_commits_in_transactions_of_bounded_size() -> None:
    # After an outage a partition can hold tens of thousands of staged records: one
    # transaction of them all might never finish inside the commit timeout.
    SizeNotingProducer.sizes = []
    broker, ledger, committer = setup_with(SizeNotingProducer, max_per_transaction=2)
    read(ledger, committer, range(5))
    assert await committer.commit(FakeConsumer(broker), {TP: 5}) == [TP]
    assert SizeNotingProducer.sizes == [2, 2, 1]
    assert broker.records == [b"e0", b"e1", b"e2", b"e3", b"e4"]
    assert broker.committed == {TP: 5}
    assert counts(ledger) == (5, 0, {})


async def test_a_partition_given_up_after_a_commit_of_unknown_outcome_says_so() -> None:
    # Only what that transaction wrote is in doubt; the records past it are the next
    # owner's for sure.
    broker, ledger, committer, consumer = setup()
    read(ledger, committer, range(3))
    broker.fail_next_commit = "unknown"
    assert await committer.commit(consumer, {TP: 3}) == []
    read(ledger, committer, range(3, 5))
    committer.forget({TP: 1})
    assert broker.records == [b"e0", b"e1", b"e2"]
    assert counts(ledger) == (0, 0, {"transaction_outcome_unknown": 3,
                                     "partition_revoked": 2})


async def test_a_partition_given_up_after_a_fenced_commit_counts_revoked() -> None:
    broker, ledger, committer, consumer = setup()
    read(ledger, committer, range(3))
    broker.fail_next_commit = "fenced"  # known aborted: the next owner writes them
    assert await committer.commit(consumer, {TP: 3}) == []
    committer.forget({TP: 1})
    assert broker.records == []
    assert counts(ledger) == (0, 0, {"partition_revoked": 3})


def source_on(ledger: Ledger, committer: TransactionalCommitter,
              consumer: FakeConsumer) -> KafkaSource:
    source = KafkaSource(SourceSettings(kind="kafka", topic="in"), ledger,
                         {"bootstrap_servers": "127.0.0.1:9"}, offsets=committer)
    source._consumer = consumer  # type: ignore[assignment]
    return source


@pytest.mark.parametrize("failure", ["timeout", "abort"])
async def test_a_revocation_settles_a_commit_of_unknown_outcome_before_letting_go(
        failure: str) -> None:
    # Was: the one commit on revocation timed out after the broker had committed it, and
    # the records were counted partition_revoked: on the topic, yet delivered by no one.
    # The retry's producer ends the old transaction and reads the committed offset.
    broker, ledger, committer = setup_with(FakeProducer, timeout_s=0.2)
    source = source_on(ledger, committer, FakeConsumer(broker))
    read(ledger, committer, range(3))
    broker.fail_next_commit = failure  # committed ("timeout") or not ("abort"): unknown
    await source.on_revoked({TP})
    assert broker.records == [b"e0", b"e1", b"e2"]  # written once either way
    assert broker.committed == {TP: 3}
    assert counts(ledger) == (3, 0, {})


async def test_a_revocation_whose_commit_stays_unknown_does_not_claim_revoked() -> None:
    broker, ledger, committer = setup_with(FakeProducer)
    source = source_on(ledger, committer, FakeConsumer(broker))
    read(ledger, committer, range(3))
    broker.fail_next_commit = "down"  # the retry cannot start a producer either
    await source.on_revoked({TP})
    assert len(broker.producers) == 2  # tried once more
    assert broker.committed == {}
    assert counts(ledger) == (0, 0, {"transaction_outcome_unknown": 3})
class RefusingProducer(FakeProducer):
    """A broker that refuses every record batch holding a record over `MAX` bytes, as
    Kafka does."""

    MAX = 4096

    def refusal(self, batch: FakeBatch) -> BaseException | None:
        if any(len(value) > self.MAX for value in batch.values):
            return MessageSizeTooLargeError("batch too large")
        return None


async def test_a_record_the_broker_refuses_is_set_apart_and_the_rest_commits() -> None:
    # The topic's limit was not known when the event was staged: its transactions fail
    # until the refused record is found (sent alone), failed and dead-lettered; the
    # dead-letter entry, refused whole too, goes as its summary.
    broker, ledger, committer = setup_with(RefusingProducer)
    store = StagedKafkaDeadLetter({}, "dlq", committer.stage, limit=RecordLimit(
        {}, "dlq", describe=unreadable))
    committer.use_dead_letters(store)
    events = [signed({"id": f"e{n}", "data": "x" * 5000 if n == 2 else ""},
                     Position("in", 0, n)) for n in range(4)]
    ledger.ingest(events)
    ledger.submitted("kafka", 4)
    committer.stage_events("kafka", "out", [(e, (None, e.body, [])) for e in events])
    ledger.delivered("kafka", events)
    attempts = 1
    while await committer.commit(FakeConsumer(broker), {TP: 4}) != [TP]:
        attempts += 1
        assert attempts < 10, "the refused record still holds the partition"
    assert broker.committed == {TP: 4}
    written = [json.loads(r) for r in broker.records]
    assert [r["id"] for r in written if "origin" not in r] == ["e0", "e1", "e3"]
    [entry] = [r for r in written if "origin" in r]
    assert entry["event_id"] == "e2"  # read back from the staged body
    assert (entry["origin"], entry["reason"], entry["truncated"], entry["source"]["offset"]
            ) == ("kafka", "message_size_too_large_error", True, 2)
    assert ledger.counts.sinks["kafka"].failed == {"message_size_too_large_error": 1}
    assert counts(ledger) == (3, 0, {})
    assert ledger.dead_letters == {"kafka": 1}


class SmallLimitProducer(FakeProducer):
    """Batches of at most 100 bytes, and a broker refusing any record over 100 bytes."""

    def __init__(self, broker: Broker, **options: Any) -> None:
        super().__init__(broker, **options, max_batch_size=100)

    def refusal(self, batch: FakeBatch) -> BaseException | None:
        if any(len(value) > 100 for value in batch.values):
            return MessageSizeTooLargeError("record too large")
        return None


async def test_a_record_refused_in_a_batch_of_its_own_is_set_apart_at_once() -> None:
    broker, ledger, committer = setup_with(SmallLimitProducer)
    committer.use_dead_letters(StagedKafkaDeadLetter(
        {}, "dlq", committer.stage, limit=RecordLimit({}, "dlq", describe=unreadable)))
    read(ledger, committer, range(2))
    big = signed({"id": "big", "data": "x" * 200}, Position("in", 0, 2))
    ledger.ingest([big])
    ledger.submitted("kafka", 1)
    committer.stage_events("kafka", "out", [(big, (None, big.body, []))])
    ledger.delivered("kafka", [big])
    assert await committer.commit(FakeConsumer(broker), {TP: 3}) == []
    # Too big to share a batch, it was refused alone: failed at once, not sent again.
    assert ledger.counts.sinks["kafka"].failed == {"message_size_too_large_error": 1}
    # The entry replaced it: whole, it is over 100 bytes too; then its summary is too.
    # A topic refusing any 1 KiB record is a broken configuration: retried, not lost.
    for _ in range(3):
        assert await committer.commit(FakeConsumer(broker), {TP: 3}) == []
    assert ledger.counts.sinks["kafka"].failed == {"message_size_too_large_error": 1}
    assert broker.committed == {}
    assert counts(ledger) == (0, 2, {})
    sent = [values for producer in broker.producers for _, _, values in producer.batches]
    assert sent.count([big.body]) == 1


async def test_a_transaction_writes_each_output_partition_in_record_batches_in_order(
        ) -> None:
    # One future per record batch, not per record (aiokafka's per-record send was the
    # larger part of a commit's cost): batches as full as the producer's batch size, each
    # output partition's records in input offset order, a late record sorted in.
    broker = Broker()
    ledger = Ledger(CollectorRegistry(), ["kafka"], staging=("kafka",),
                    deadletters_staged=True)
    committer = TransactionalCommitter({"max_batch_size": 6}, "g", ledger,
                                       producer_class=lambda **o: FakeProducer(broker, **o))
    events = [SignedEvent(f"e{n}", {}, b"e%d" % n, Position("in", 0, n), f"k{'x' * (n % 2)}")
              for n in range(7)]
    ledger.ingest(events)
    ledger.submitted("kafka", len(events))
    late, early = events[3:4], events[:3] + events[4:]
    for staged in (early, late):
        committer.stage_events("kafka", "out", [(e, (e.partition_key.encode(), e.body, []))
                                                for e in staged if e.partition_key])
    ledger.delivered("kafka", events)
    assert await committer.commit(FakeConsumer(broker), {TP: 7}) == [TP]
    # Keys of odd length ("k") go to partition 1 (FakeProducer._partition); 3 records a
    # batch of 6 bytes. Each partition's batches in the order sent (sorted is stable).
    by_partition = sorted(broker.producers[0].batches, key=lambda batch: batch[1])
    assert by_partition == [("out", 0, [b"e1", b"e3", b"e5"]),
                            ("out", 1, [b"e0", b"e2", b"e4"]), ("out", 1, [b"e6"])]
    assert counts(ledger) == (7, 0, {})


class RefusingOutputProducer(FakeProducer):
    """An output topic refusing records over 4096 bytes; the dead-letter topic takes
    them."""

    def refusal(self, batch: FakeBatch) -> BaseException | None:
        if self.batches[-1][0] == "out" and any(len(v) > 4096 for v in batch.values):
            return MessageSizeTooLargeError("batch too large")
        return None


async def test_a_refused_event_is_dead_lettered_with_its_attributes() -> None:
    # A staged event keeps its body, not its parsed attributes (most of its memory): the
    # dead-letter entry of one refused reads them back from the body.
    broker, ledger, committer = setup_with(RefusingOutputProducer)
    committer.use_dead_letters(StagedKafkaDeadLetter(
        {}, "dlq", committer.stage, limit=RecordLimit({}, "dlq", describe=unreadable)))
    big = signed({"id": "big", "data": {"n": 2**70, "x": "é" * 3000}}, Position("in", 0, 0))
    ledger.ingest([big])
    ledger.submitted("kafka", 1)
    committer.stage_events("kafka", "out", [(big, (None, big.body, []))])
    ledger.delivered("kafka", [big])
    while await committer.commit(FakeConsumer(broker), {TP: 1}) != [TP]:
        pass  # refused alone at once: one failed transaction, then the entry commits
    [entry] = [json.loads(record) for record in broker.records]
    assert entry["event"] == big.attributes
    assert ledger.counts.sinks["kafka"].failed == {"message_size_too_large_error": 1}


async def test_a_large_transaction_sends_each_batch_once_it_is_full() -> None:
    # Its batches hold a copy of its records: built all before sending, a transaction of
    # thousands of records would hold them all twice.
    broker = Broker()
    ledger = Ledger(CollectorRegistry(), ["kafka"], staging=("kafka",))
    committer = TransactionalCommitter({"max_batch_size": 30}, "g", ledger,
                                       producer_class=lambda **o: FakeProducer(broker, **o))
    events = [SignedEvent(f"e{n}", {}, b"%-10d" % n, Position("in", 0, n), "k" * (n % 2 + 1))
              for n in range(1000)]
    ledger.ingest(events)
    ledger.submitted("kafka", len(events))
    committer.stage_events("kafka", "out", [(e, (b"k", e.body, [])) if e.partition_key == "k"
                                            else (e, (b"kk", e.body, [])) for e in events])
    ledger.delivered("kafka", events)
    assert await committer.commit(FakeConsumer(broker), {TP: 1000}) == [TP]
    [producer] = broker.producers
    assert len(producer.batches) > 300  # 3 records a batch
    assert producer.most_unsent <= 2  # one filling per output partition
    assert counts(ledger) == (1000, 0, {})


async def test_a_commit_is_wanted_early_once_enough_records_are_staged() -> None:
    # At full speed the 2 s interval let the reading fill the outbox to its bound and
    # wait there for each commit; now the commit starts once a quarter of it is staged.
    broker, ledger, committer = setup_with(FakeProducer, commit_early_at=3)
    read(ledger, committer, range(2))
    assert not committer.commit_wanted.is_set()
    read(ledger, committer, range(2, 3))
    assert committer.commit_wanted.is_set()
    broker.fail_next_commit = "abort"
    assert await committer.commit(FakeConsumer(broker), {TP: 3}) == []
    # Counted from when a commit began: one that failed is not tried again at once (no
    # busy retrying), only once as many more are staged, or at the interval.
    assert not committer.commit_wanted.is_set()
    read(ledger, committer, range(3, 5))
    assert not committer.commit_wanted.is_set()
    read(ledger, committer, range(5, 6))
    assert committer.commit_wanted.is_set()
    assert await committer.commit(FakeConsumer(broker), {TP: 6}) == [TP]
    assert counts(ledger) == (6, 0, {})


async def test_a_wanted_commit_does_not_wait_for_the_interval() -> None:
    wanted = asyncio.Event()
    wanted.set()
    async with asyncio.timeout(60):  # the interval is an hour: only `wanted` ends it
        await commit_due(3600.0, wanted)


async def test_a_wanted_commit_that_finds_nothing_due_is_not_asked_for_again() -> None:
    # The records staged, their positions may not be settled yet (another sink behind),
    # so the source finds no offset due and never calls `commit`: the request must not
    # stay set, or the daemon's commit loop would wake again at once, forever.
    _, ledger, committer = setup_with(FakeProducer, commit_early_at=3)
    read(ledger, committer, range(3))
    async with asyncio.timeout(60):  # the interval is an hour: only `wanted` ends it
        await commit_due(3600.0, committer.commit_wanted)
    assert not committer.commit_wanted.is_set()  # taken; no commit followed
    read(ledger, committer, range(3, 10))
    assert not committer.commit_wanted.is_set()  # only the next commit starts a count
