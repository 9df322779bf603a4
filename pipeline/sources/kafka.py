"""The Kafka source: a consumer group member that never commits past an unsettled record.

Offsets are committed explicitly (auto-commit off) from the `OffsetTracker`'s contiguous
settled prefix, periodically, on partition revocation (after what is held for the revoked
partitions has settled, within a deadline; a failed commit is tried once more) and on
shutdown. While the sinks' queues are
full, fetching is paused but the consumer keeps polling, so it stays in its group.

Every record the consumer returns is handed on (and tracked) or its partition is rewound
to it before anything else happens: the one `getmany` call is in `_fetch`. A partition
assigned while reading is paused (a rebalance) arrives unpaused; it is paused again, and
whatever it already returned is read again later. `OffsetGuard` checks that what is
handed on continues where the last hand-over ended. With producer signatures required, an
assigned partition stays paused until its nonces are rebuilt (`nonce_rebuild`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Iterable, Mapping
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.errors import KafkaError

from pipeline.delivery.ledger import Ledger
from pipeline.inbound.verifier import InboundVerifier
from pipeline.kafka_connection import caught_causes, explain
from pipeline.model import Record
from pipeline.ops.health import Status
from pipeline.settings import SourceSettings
from pipeline.sources.base import Room
from pipeline.sources.commits import ConsumerCommits, OffsetCommitter
from pipeline.sources.kafka_record import kafka_record
from pipeline.sources.nonce_rebuild import NonceRebuild, PartitionRebuilds
from pipeline.sources.offset_guard import OffsetGuard
from pipeline.sources.rebalance import POSITION_TIMEOUT_S, RebalanceListener, consumer_options

log = logging.getLogger(__name__)

POLL_MS = 500
MAX_RECORDS = 500


class KafkaSource:
    """Reads `source.topic` in consumer group `source.group_id`."""

    def __init__(self, settings: SourceSettings, ledger: Ledger, connection: Mapping[str, Any],
                 *,
                 revoke_timeout_s: float = 30.0, inbound: InboundVerifier | None = None,
                 offsets: OffsetCommitter | None = None) -> None:
        """`offsets`: how settled offsets are committed (the consumer's own commit unless
        given: exactly-once commits them in the Kafka sink's transactions)."""
        self.name = f"kafka:{settings.topic}"
        self._settings = settings
        self._ledger = ledger
        self._tracker = ledger.tracker
        # aiokafka's client options (brokers, TLS, SASL): see pipeline.kafka_connection.
        self._connection = dict(connection)
        self._revoke_timeout_s = revoke_timeout_s
        self._consumer: AIOKafkaConsumer | None = None
        self._committed: dict[TopicPartition, int] = {}
        self._epochs: dict[TopicPartition, int] = {}
        self._next_offset: dict[TopicPartition, int] = {}
        self._commit_lock = asyncio.Lock()
        self._offsets = offsets if offsets is not None else ConsumerCommits()
        self._guard = OffsetGuard(self._report_gap)
        self._paused = False
        self._closing = False
        # Producer signatures required: each assigned partition's nonces are rebuilt first.
        self._rebuilds = PartitionRebuilds(None if inbound is None else NonceRebuild(
            inbound, self._connection, consumer_options(settings, revoke_timeout_s)))
        self.error: str | None = None

    async def start(self) -> None:
        """Join the group, retrying with backoff while the brokers cannot be reached."""
        backoff = 0.5
        while self._consumer is None:
            try:
                with caught_causes() as catcher:
                    await self._start_once()
            except KafkaError as exc:
                self.error = explain(exc, self._connection, catcher.cause)
                log.error("%s; retrying in %.1fs", self.error, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 10.0)
        self.error = None

    async def _start_once(self) -> None:
        consumer = AIOKafkaConsumer(**self._connection, **consumer_options(
            self._settings, self._revoke_timeout_s))
        consumer.subscribe([self._settings.topic], listener=RebalanceListener(self, consumer))
        try:
            await consumer.start()
        except BaseException:
            await consumer.stop()
            raise
        self._consumer = consumer
        log.info("kafka source started", extra={"fields": {
            "topic": self._settings.topic, "group_id": self._settings.group_id}})

    async def batches(self, room: Room) -> AsyncIterator[list[Record]]:
        """Yield fetched records until `aclose`; waits for room before each fetch."""
        await self.start()
        consumer = self._consumer
        assert consumer is not None
        while True:
            if not room.available():
                await self._paused_until_room(consumer, room)
            if records := await self._fetch(consumer, POLL_MS):
                yield records

    async def _paused_until_room(self, consumer: AIOKafkaConsumer, room: Room) -> None:
        room.note_pause()
        self._paused = True
        try:
            while not room.available():
                # Again each time: a rebalance hands over partitions unpaused.
                consumer.pause(*consumer.assignment())
                try:
                    async with asyncio.timeout(POLL_MS / 1000):
                        await room.wait()
                except TimeoutError:
                    # Polling keeps this member in its group; anything it returns is rewound.
                    await self._fetch(consumer, 0)
        finally:
            self._paused = False
            consumer.resume(*(consumer.assignment() - self._rebuilds.holding))

    async def _fetch(self, consumer: AIOKafkaConsumer, timeout_ms: int) -> list[Record]:
        """The only read: every record returned is handed on, or its partition rewound."""
        fetched = await consumer.getmany(timeout_ms=timeout_ms, max_records=MAX_RECORDS)
        records: list[Record] = []
        for tp, messages in fetched.items():
            if not messages:
                continue
            # Assigned since reading paused, or still rebuilding: read these again later.
            if self._paused or tp in self._rebuilds.holding:
                self._rewind(consumer, tp, messages[0].offset)
                consumer.pause(tp)
                continue
            admission = self._guard.admit(tp, [message.offset for message in messages])
            if admission.restart:
                self._restart(tp, messages[0].offset)
            if admission.rewind_to is not None:
                self._rewind(consumer, tp, admission.rewind_to)
            records.extend(self._record(tp, message) for message in messages[admission.skip:])
            self._next_offset[tp] = messages[-1].offset + 1
        return records

    def _restart(self, tp: TopicPartition, offset: int) -> None:
        """The consumer went back before this assignment's first record (an offset reset):
        what is in flight of the partition is forgotten (read again: duplicates) and it
        is tracked afresh from `offset`, as after a new assignment."""
        log.warning("consumer went back to offset %d of %s-%d, before where this assignment "
                    "started: reading on from there; records in flight are read again",
                    offset, tp.topic, tp.partition)
        self._tracker.forget([(tp.topic, tp.partition)])
        self._committed.pop(tp, None)
        self._epochs[tp] = self._epochs.get(tp, 0) + 1
        self._offsets.forget({tp: self._epochs[tp]})

    @staticmethod
    def _rewind(consumer: AIOKafkaConsumer, tp: TopicPartition, offset: int) -> None:
        if tp in consumer.assignment():  # else its next owner reads it from the commit
            consumer.seek(tp, offset)

    def _report_gap(self, tp: TopicPartition, start: int, end: int) -> None:
        self._ledger.offset_gap()
        log.error("records were consumed without being processed: offsets %d to %d of %s-%d "
                  "were skipped; they have been read again and nothing was committed past "
                  "them. This is a bug in govpipe: please report it.", start, end - 1,
                  tp.topic, tp.partition, extra={"fields": {
                      "topic": tp.topic, "partition": tp.partition, "from": start,
                      "to": end - 1}})

    def _record(self, tp: TopicPartition, message: ConsumerRecord[Any, Any]) -> Record:
        return kafka_record(tp, message, self._epochs.get(tp, 0))

    async def refresh_metrics(self) -> None:
        """Lag per partition from the brokers' end offsets (fetched even while paused, so a
        stalled pipeline shows a growing lag)."""
        consumer = self._consumer
        if consumer is None or not (assigned := consumer.assignment()):
            return
        try:
            ends = await consumer.end_offsets(list(assigned))
        except KafkaError as exc:
            log.debug("end offsets unavailable: %s", exc)
            return
        for tp, end in ends.items():
            read_to = self._next_offset.get(tp, self._committed.get(tp, end))
            self._ledger.lag(tp.partition, max(0, end - read_to))

    async def commit(self) -> None:
        """Commit the settled prefix of every assigned partition."""
        await self._commit()

    async def _commit(self, only: Iterable[TopicPartition] | None = None) -> bool:
        """Commit the settled prefix of every (or only the given) assigned partition;
        False when some partition's commit failed (it is tried again next time)."""
        async with self._commit_lock:  # what is due is decided under the lock: a revocation
            consumer = self._consumer   # may have forgotten partitions while this waited
            if consumer is None:
                return True
            assigned = consumer.assignment()
            wanted = assigned & set(only) if only is not None else assigned
            due = {tp: offset
                   for (topic, partition), offset in self._tracker.committable().items()
                   if (tp := TopicPartition(topic, partition)) in wanted
                   and self._committed.get(tp) != offset}
            if not due:
                return True
            committed = await self._offsets.commit(consumer, due)
            self._committed.update({tp: due[tp] for tp in committed})
            if committed:
                log.debug("committed", extra={"fields": {"offsets": {
                    f"{tp.topic}-{tp.partition}": due[tp] for tp in committed}}})
            return len(committed) == len(due)

    async def on_revoked(self, revoked: set[TopicPartition]) -> None:
        """Settle and commit what is held for `revoked` before the group takes them.

        A commit that fails is tried once more: a failed commit may have committed all the
        same (a transaction whose answer was lost), and only while the partitions are still
        ours can a new attempt tell, so their records are counted for what they are. The
        wait and both commits fit inside the group's rebalance timeout (see
        `rebalance_timeout_ms`). Whatever happens here, even an eviction that makes the
        commit fail, the partitions are forgotten: their unsettled records are the next
        owner's to read, and settlements still arriving for them count for nothing.
        """
        keys = {(tp.topic, tp.partition) for tp in revoked}
        try:
            if not self._closing:  # at shutdown the daemon has drained already
                await self._wait_settled(keys)
            if not await self._commit(revoked):
                await self._commit(revoked)  # only the partitions not committed yet
        finally:
            self._tracker.forget(keys)
            self._guard.forget(revoked)
            self._rebuilds.stop(revoked)
            for tp in revoked:
                self._committed.pop(tp, None)
                self._next_offset.pop(tp, None)
                self._epochs[tp] = self._epochs.get(tp, 0) + 1
            self._offsets.forget({tp: self._epochs[tp] for tp in revoked})

    async def _wait_settled(self, keys: set[tuple[str, int]]) -> None:
        try:
            async with asyncio.timeout(self._revoke_timeout_s):
                await self._tracker.wait_partitions_idle(keys)
        except TimeoutError:
            log.error("partitions revoked with records still unsettled; they will be "
                      "redelivered to the next owner", extra={"fields": {
                          "unsettled": self._tracker.outstanding_in(keys)}})

    async def on_assigned(self, consumer: AIOKafkaConsumer,
                          assigned: set[TopicPartition]) -> None:
        """Pause what arrives while reading is paused; note where each partition resumes."""
        if self._paused:
            consumer.pause(*assigned)
        # Paused until their nonces are back (when producer signatures are required).
        self._rebuilds.start(consumer, assigned, lambda: not self._paused)
        log.info("partitions assigned", extra={"fields": {
            "partitions": sorted(f"{tp.topic}-{tp.partition}" for tp in assigned)}})
        try:
            async with asyncio.timeout(POSITION_TIMEOUT_S):
                positions = [(tp, await consumer.position(tp)) for tp in assigned]
        except (TimeoutError, KafkaError) as exc:
            # The guard then starts checking from the first records these partitions return.
            log.warning("resume positions unknown: %r", exc)
            return
        for tp, position in positions:
            if tp in consumer.assignment():
                self._guard.resume(tp, position)

    def health(self) -> tuple[Status, str]:
        if self.error:
            return Status.UNHEALTHY, self.error
        consumer = self._consumer
        if consumer is None:
            return Status.UNHEALTHY, "not connected yet"
        assigned = sorted(f"{tp.topic}-{tp.partition}" for tp in consumer.assignment())
        if not assigned:
            return Status.DEGRADED, "connected, no partitions assigned"
        if held := sorted(f"{tp.topic}-{tp.partition}" for tp in self._rebuilds.holding):
            return Status.DEGRADED, f"rebuilding the nonces of {', '.join(held)}"
        if self._offsets.error:  # read on, but a restart would read it all again
            return Status.DEGRADED, f"consuming, offsets not committed: {self._offsets.error}"
        return Status.HEALTHY, f"consuming {', '.join(assigned)}"

    async def aclose(self) -> None:
        """Commit the settled prefix one last time, then leave the group. Each step has a
        deadline (`commit` its own, leaving the group the caller's): an unreachable broker
        leaves unsettled records for redelivery, it does not hold the exit."""
        if self._consumer is None:
            return
        self._closing = True
        await self._rebuilds.aclose()
        await self.commit()
        consumer, self._consumer = self._consumer, None
        try:
            await consumer.stop()
        finally:  # after the consumer: leaving the group may still commit
            await self._offsets.aclose()
