"""Exactly-once commits: one transactional producer per input partition, and per commit
one transaction that writes the partition's staged records (`Outbox`) and its offset.

Zombies are fenced as Kafka Streams did before KIP-447: the transactional id names the
input partition (`govpipe-<group>-<topic>-<partition>`), so whoever starts the producer for
a partition fences any older one (its commits fail from then on) and ends its open
transaction. The new producer then reads the group's committed offset, which no fenced
producer can move any more, and writes only records at or past it: records below it were
written by the transaction that committed it.

A transaction that fails (broker restart, timeout, fencing) drops its producer; the next
commit starts a new one, which settles the old transaction either way (committed or
aborted), and the committed offset tells which: committed, its records are counted
delivered; aborted, the same staged records go in the next transaction (a fenced one is
known aborted). Nothing is written twice, nothing is counted twice. A partition given up
while a transaction's outcome is still unknown cannot tell: its records are counted
`OUTCOME_UNKNOWN`, not claimed for the next owner (`tally`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import IllegalOperation, InvalidProducerEpoch, KafkaError, ProducerFenced

from pipeline.delivery.capacity import Capacity
from pipeline.delivery.ledger import Ledger
from pipeline.exactly_once.batches import Sent
from pipeline.exactly_once.outbox import Outbox, Staged, kept_event
from pipeline.exactly_once.producers import TransactionalProducers
from pipeline.exactly_once.refusals import Refusals, RefusedRecords
from pipeline.exactly_once.tally import (
    COMMITTED_ELSEWHERE,
    OUTCOME_UNKNOWN,
    REVOKED,
    count_delivered,
    count_dropped,
    split_below,
)
from pipeline.kafka_limits import RecordLimit
from pipeline.model import SignedEvent
from pipeline.sources.rebalance import COMMIT_TIMEOUT_S

log = logging.getLogger(__name__)

Message = tuple[bytes | None, bytes, list[tuple[str, bytes]]]  # key, value, headers

# Records staged and not yet committed, past which the Kafka sink waits (and so, its queue
# filling, the source pauses): a transaction that keeps failing must not let the outbox
# grow without bound. Reading at full speed reaches it too (the transactions' round trips
# wait behind the reading), and then paces reading to the commits.
MAX_STAGED = 50_000
# Records staged since the last commit began past which the next one is asked for at once
# (`commit_wanted`), before the commit interval ends: at full speed the reading and the
# transactions then overlap, instead of the reading waiting at `MAX_STAGED` for a commit.
# Counted since a commit began, so commits that keep failing are not retried any faster.
COMMIT_EARLY_AT = MAX_STAGED // 4
# Records per transaction: a commit of more (a backlog after an outage) goes in several,
# each well inside the commit timeout, so a slow broker still sees progress.
MAX_PER_TRANSACTION = 5_000
# A newer producer for the partition started: this one's transaction was aborted.
FENCED = (ProducerFenced, InvalidProducerEpoch)


class TransactionalCommitter:
    """The Kafka source's `OffsetCommitter` in exactly-once mode; it also takes the staged
    records (`stage`) of the Kafka sink and the dead-letter store."""

    def __init__(self, producer_options: Mapping[str, Any], group_id: str, ledger: Ledger,
                 *, timeout_s: float = COMMIT_TIMEOUT_S,
                 producer_class: Callable[..., AIOKafkaProducer] = AIOKafkaProducer,
                 max_staged: int = MAX_STAGED,
                 max_per_transaction: int = MAX_PER_TRANSACTION,
                 commit_early_at: int = COMMIT_EARLY_AT) -> None:
        """`producer_options`: aiokafka producer keywords (connection, batching);
        `producer_class` makes the producers (tests give a fake); `max_staged` bounds the
        records waiting for their transactions (`wait_for_room`); `commit_early_at`
        records staged since a commit began set `commit_wanted`."""
        self._producers = TransactionalProducers(producer_options, group_id, timeout_s,
                                                 producer_class)
        self._group_id = group_id
        self._ledger = ledger
        self._timeout_s = timeout_s
        self._outbox = Outbox()
        self._capacity = Capacity(max_staged)
        self._max_per_transaction = max_per_transaction
        self._base: dict[TopicPartition, int] = {}  # committed offset, as this producer knows
        # A transaction asked to commit whose outcome is unknown, by partition: its end.
        self._attempt: dict[TopicPartition, int] = {}
        self._errors: dict[TopicPartition, str] = {}  # per partition, until a success
        # The records a transaction under way writes, by partition: given up meanwhile,
        # they are counted by how that transaction ends, not when the partition goes.
        self._writing: dict[TopicPartition, list[Staged]] = {}
        self._orphans: dict[TopicPartition, list[Staged]] = {}
        self._given_up: dict[TopicPartition, int] = {}  # forgets so far, by partition
        self._refusals = Refusals(self._outbox, ledger)
        self.commit_wanted = asyncio.Event()  # enough staged: commit before the interval
        self._commit_early_at = commit_early_at
        self._staged_since_commit = 0

    def use_dead_letters(self, dead_letters: RefusedRecords) -> None:
        """Where records the broker refuses as too large go instead (`refusals`)."""
        self._refusals.dead_letters = dead_letters

    def limit_batches(self, limit: RecordLimit) -> None:
        """`limit`: the record limit of a topic the transactions write. The broker refuses
        a whole record batch over its topic's max.message.bytes, however small its records:
        a producer started once the limit is known keeps its batches within it."""
        self._producers.limit_batches(limit)

    @property
    def error(self) -> str | None:
        """Why the partitions whose last transaction failed could not commit, else None."""
        return "; ".join(self._errors.values()) or None

    def transactional_id(self, tp: TopicPartition) -> str:
        """The partition's transactional id: every replica of the group uses the same."""
        return self._producers.transactional_id(tp)

    def stage(self, items: Sequence[Staged]) -> None:
        """Records for their partitions' next transactions. Events of a partition given up
        since they were read are dropped (counted): its next owner writes them."""
        stale = self._outbox.stage(items)
        self._capacity.update(self._outbox.size)
        before = self._staged_since_commit
        self._staged_since_commit += len(items) - len(stale)
        # Set once on reaching it, not on every stage past it: the daemon clears the
        # event as it wakes, and a commit with nothing due (their positions not settled
        # yet, another sink behind) must not be asked for again at each stage.
        if before < self._commit_early_at <= self._staged_since_commit:
            self.commit_wanted.set()
        count_dropped(self._ledger, stale, REVOKED)

    def stage_events(self, sink: str, topic: str,
                     messages: Sequence[tuple[SignedEvent, Message]]) -> None:
        """`sink`'s events, each with its Kafka message (key, value, headers), for `topic`."""
        self.stage([Staged(event.position, topic, key, value, headers, event=kept_event(event),
                           sink=sink)
                    for event, (key, value, headers) in messages])

    async def wait_for_room(self) -> None:
        """Return once fewer than `max_staged` records wait for their transactions."""
        await self._capacity.wait()

    async def commit(self, consumer: AIOKafkaConsumer, due: Mapping[TopicPartition, int]
                     ) -> Collection[TopicPartition]:
        # `due` was worked out for the partitions as they are now: one given up from here
        # on must not have its offset committed by this call (`_still_mine`).
        tps = list(due)
        marks = [self._given_up.get(tp, 0) for tp in tps]
        self._staged_since_commit = 0
        self.commit_wanted.clear()
        await self._producers.close_retired()
        results = await asyncio.gather(*(self._commit_one(consumer, tp, due[tp], mark)
                                         for tp, mark in zip(tps, marks, strict=True)))
        return [tp for tp, ok in zip(tps, results, strict=True) if ok]

    def _still_mine(self, tp: TopicPartition, mark: int) -> bool:
        return self._given_up.get(tp, 0) == mark

    async def _commit_one(self, consumer: AIOKafkaConsumer, tp: TopicPartition,
                          offset: int, mark: int) -> bool:
        """Commit `tp` up to `offset`, in transactions of at most `max_per_transaction`
        records each; True once all of it is committed."""
        while True:
            part = self._part(tp, offset)
            if not await self._commit_settling(consumer, tp, part, mark):
                return False
            if part >= offset:
                return True

    def _part(self, tp: TopicPartition, offset: int) -> int:
        """Where the next transaction of `tp` toward `offset` ends: `offset`, or earlier
        when more than `max_per_transaction` records are staged below it."""
        return self._outbox.commit_point((tp.topic, tp.partition), offset,
                                         self._max_per_transaction)

    async def _commit_settling(self, consumer: AIOKafkaConsumer, tp: TopicPartition,
                               offset: int, mark: int) -> bool:
        try:
            return await self._commit_partition(consumer, tp, offset, mark)
        finally:
            self._writing.pop(tp, None)
            orphans = self._orphans.pop(tp, [])
            if not self._still_mine(tp, mark):
                # Given up while its transaction was under way: what it wrote is counted
                # by how that ended (delivered, taken already, if it committed).
                in_doubt = self._attempt.pop(tp, None) is not None
                count_dropped(self._ledger, orphans, OUTCOME_UNKNOWN if in_doubt else REVOKED)

    async def _commit_partition(self, consumer: AIOKafkaConsumer, tp: TopicPartition,
                                offset: int, mark: int) -> bool:
        resolved = False  # any transaction of unknown outcome is this producer's
        try:
            async with asyncio.timeout(self._timeout_s):
                producer = await self._producers.get(tp)
                await producer.begin_transaction()  # waits for the producer id (fencing)
                if tp not in self._base:
                    self._resolve(tp, await consumer.committed(tp))
                resolved = True
                base = self._base[tp]
                if offset > base:
                    await self._transaction(producer, tp, offset, mark)
                else:  # another owner committed past all of it
                    await producer.abort_transaction()
        except (KafkaError, IllegalOperation, TimeoutError) as exc:
            self._failed(tp, exc, mark, fenced_own=resolved and isinstance(exc, FENCED))
            return False
        self._errors.pop(tp, None)
        if not self._still_mine(tp, mark):
            # Given up meanwhile (forget): what this transaction wrote is delivered (no next
            # owner writes it, the offset being past it); the rest was counted then.
            self._attempt.pop(tp, None)
            count_delivered(self._ledger, self._orphans.pop(tp, []))
            return True
        self._attempt.pop(tp, None)
        self._refusals.clear(tp)
        self._base[tp] = max(base, offset)
        self._released(tp, offset, mine=offset > base)
        return True

    async def _transaction(self, producer: AIOKafkaProducer, tp: TopicPartition,
                           offset: int, mark: int) -> None:
        if not self._still_mine(tp, mark):
            # Given up while the transaction began: its records left the outbox uncounted
            # for this owner, so committing the offset now would skip them. Abort.
            await producer.abort_transaction()
            raise IllegalOperation(f"{tp.topic}-{tp.partition} given up mid-commit")
        items = self._outbox.before((tp.topic, tp.partition), offset, start=self._base[tp])
        self._writing[tp] = items
        sent: list[Sent] = []
        try:
            await self._refusals.send(producer, tp, items, sent)
        finally:
            # Every outcome observed, even when a send raised part-way (none logged as
            # never retrieved); the first failure raised.
            outcomes = await asyncio.gather(*(future for future, _ in sent),
                                            return_exceptions=True)
        if failure := next((o for o in outcomes if isinstance(o, BaseException)), None):
            if self._still_mine(tp, mark):
                self._refusals.set_apart(self._refusals.judge(tp, sent, outcomes))
                self._capacity.update(self._outbox.size)
            raise failure
        await producer.send_offsets_to_transaction({tp: offset}, self._group_id)
        # From here a failure (a timeout, a broker gone) may still have committed it.
        self._attempt[tp] = offset
        await producer.commit_transaction()

    def _failed(self, tp: TopicPartition, exc: BaseException, mark: int, *,
                fenced_own: bool) -> None:
        """Whatever broke (a broker away, a fencing, a producer in a bad state), a new
        producer starts over from what the group has committed. `fenced_own`: this
        producer was fenced, so its transaction aborted."""
        error = f"{tp.topic}-{tp.partition}: {type(exc).__name__}: {exc}"
        if self._still_mine(tp, mark):
            self._errors[tp] = error
        log.warning("transaction failed, will retry: %s", error)
        # Fenced before `_resolve`, an older producer's transaction is as unknown as it was.
        if fenced_own:
            self._attempt.pop(tp, None)
        self._retire(tp)

    def _resolve(self, tp: TopicPartition, committed: int | None) -> None:
        """A new producer for `tp`: its start ended any older producer's transaction, so
        `committed` is final. Staged records below it were written by the transaction that
        committed it: this process's own, if that was the one of unknown outcome."""
        base = committed if committed is not None else 0
        attempt = self._attempt.pop(tp, None)
        if attempt is not None and attempt <= base:
            self._released(tp, attempt, mine=True)
        self._released(tp, base, mine=False)
        self._base[tp] = base

    def _released(self, tp: TopicPartition, offset: int, *, mine: bool) -> None:
        items = self._outbox.release((tp.topic, tp.partition), offset)
        self._capacity.update(self._outbox.size)
        if mine:
            count_delivered(self._ledger, items)
        else:
            count_dropped(self._ledger, items, COMMITTED_ELSEWHERE)

    def _retire(self, tp: TopicPartition) -> None:
        """Drop `tp`'s producer: the next commit starts another, which settles this one's
        transaction and learns how (`_resolve`)."""
        self._base.pop(tp, None)
        self._producers.retire(tp)

    def forget(self, epochs: Mapping[TopicPartition, int]) -> None:
        dropped = self._outbox.forget({(tp.topic, tp.partition): epoch
                                       for tp, epoch in epochs.items()})
        self._capacity.update(self._outbox.size)
        for tp in epochs:
            self._given_up[tp] = self._given_up.get(tp, 0) + 1
            if tp in self._writing:  # a transaction under way settles its own records
                writing = {id(item) for item in self._writing[tp]}
                self._orphans.setdefault(tp, []).extend(
                    item for item in dropped if id(item) in writing)
                dropped = [item for item in dropped if id(item) not in writing]
            elif (attempt := self._attempt.pop(tp, None)) is not None:
                # Written by a transaction that may have committed: not the next owner's.
                in_doubt, dropped = split_below(dropped, (tp.topic, tp.partition), attempt)
                count_dropped(self._ledger, in_doubt, OUTCOME_UNKNOWN)
            self._errors.pop(tp, None)
            self._refusals.clear(tp)
            self._retire(tp)
        count_dropped(self._ledger, dropped, REVOKED)

    async def aclose(self) -> None:
        """Stop every producer (an open transaction is ended by the next owner's start)."""
        await self._producers.aclose()

