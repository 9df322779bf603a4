"""The Kafka source: a consumer group member that never commits past an unsettled record.

Offsets are committed explicitly (auto-commit off) from the `OffsetTracker`'s contiguous
settled prefix, periodically, on partition revocation (after what is held for the revoked
partitions has settled, within a deadline) and on shutdown. While the sinks' queues are
full, fetching is paused but the consumer keeps polling, so it stays in its group.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Iterable, Mapping
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.abc import ConsumerRebalanceListener
from aiokafka.errors import KafkaError
from aiokafka.structs import OffsetAndMetadata

from pipeline.health import Status
from pipeline.metrics import Metrics
from pipeline.model import Position, Record
from pipeline.offsets import OffsetTracker
from pipeline.settings import SourceSettings
from pipeline.source import Room

log = logging.getLogger(__name__)

POLL_MS = 500
MAX_RECORDS = 500


class KafkaSource:
    """Reads `source.topic` in consumer group `source.group_id`."""

    def __init__(self, settings: SourceSettings, tracker: OffsetTracker, metrics: Metrics, *,
                 revoke_timeout_s: float = 30.0) -> None:
        self.name = f"kafka:{settings.topic}"
        self._settings = settings
        self._tracker = tracker
        self._metrics = metrics
        self._revoke_timeout_s = revoke_timeout_s
        self._consumer: AIOKafkaConsumer | None = None
        self._committed: dict[TopicPartition, int] = {}
        self._epochs: dict[TopicPartition, int] = {}
        self._next_offset: dict[TopicPartition, int] = {}
        self._commit_lock = asyncio.Lock()
        self.error: str | None = None
        self.finished = False
        self.last_fetch_ok = False

    async def start(self) -> None:
        """Join the group, retrying with backoff while the brokers cannot be reached."""
        backoff = 0.5
        while self._consumer is None:
            try:
                await self._start_once()
            except KafkaError as exc:
                self.error = f"cannot reach Kafka at {self._settings.bootstrap_servers}: {exc}"
                log.error("%s; retrying in %.1fs", self.error, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 10.0)
        self.error = None

    async def _start_once(self) -> None:
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self._settings.bootstrap_servers,
            group_id=self._settings.group_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_partition_fetch_bytes=max(1_048_576, self._settings.max_event_bytes + 1024),
        )
        consumer.subscribe([self._settings.topic], listener=_Listener(self))
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
            fetched = await consumer.getmany(timeout_ms=POLL_MS, max_records=MAX_RECORDS)
            self.last_fetch_ok = True
            records = [self._record(tp, message)
                       for tp, messages in fetched.items() for message in messages]
            self._note_fetched(fetched)
            if records:
                yield records

    async def _paused_until_room(self, consumer: AIOKafkaConsumer, room: Room) -> None:
        assigned = consumer.assignment()
        consumer.pause(*assigned)
        try:
            while not room.available():
                try:
                    async with asyncio.timeout(POLL_MS / 1000):
                        await room.wait()
                except TimeoutError:
                    # Paused partitions return nothing; polling keeps us in the group.
                    await consumer.getmany(timeout_ms=0)
        finally:
            consumer.resume(*(tp for tp in assigned if tp in consumer.assignment()))

    def _record(self, tp: TopicPartition, message: ConsumerRecord[Any, Any]) -> Record:
        raw_headers = message.headers
        # Most records have no headers: no generator for them (this runs per record).
        headers = tuple((name, value or b"") for name, value in raw_headers) \
            if raw_headers else ()
        position = Position(tp.topic, tp.partition, message.offset, self._epochs.get(tp, 0))
        return Record(message.value if message.value is not None else b"", position,
                      key=message.key, headers=headers)

    def _note_fetched(self, fetched: Mapping[TopicPartition, list[ConsumerRecord[Any, Any]]]
                      ) -> None:
        for tp, messages in fetched.items():
            if messages:
                self._next_offset[tp] = messages[-1].offset + 1

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
            self._metrics.source_lag.labels(str(tp.partition)).set(max(0, end - read_to))

    async def commit(self, only: Iterable[TopicPartition] | None = None) -> None:
        """Commit the settled prefix of every (or only the given) assigned partition."""
        consumer = self._consumer
        if consumer is None:
            return
        wanted = set(only) if only is not None else consumer.assignment()
        offsets = {TopicPartition(topic, partition): offset
                   for (topic, partition), offset in self._tracker.committable().items()}
        due = {tp: OffsetAndMetadata(offset, "") for tp, offset in offsets.items()
               if tp in wanted and self._committed.get(tp) != offset}
        if not due:
            return
        async with self._commit_lock:
            try:
                await consumer.commit(due)
            except KafkaError as exc:
                log.warning("offset commit failed, will retry: %s", exc)
                return
        self._committed.update({tp: meta.offset for tp, meta in due.items()})
        log.debug("committed", extra={"fields": {
            "offsets": {f"{tp.topic}-{tp.partition}": m.offset for tp, m in due.items()}}})

    async def on_revoked(self, revoked: set[TopicPartition]) -> None:
        """Settle and commit what is held for `revoked` before the group takes them."""
        keys = {(tp.topic, tp.partition) for tp in revoked}
        try:
            async with asyncio.timeout(self._revoke_timeout_s):
                await self._tracker.wait_partitions_idle(keys)
        except TimeoutError:
            log.error("partitions revoked with records still unsettled; they will be "
                      "redelivered to the next owner", extra={"fields": {
                          "unsettled": self._tracker.outstanding_in(keys)}})
        await self.commit(revoked)
        self._tracker.forget(keys)
        for tp in revoked:
            self._committed.pop(tp, None)
            self._next_offset.pop(tp, None)
            self._epochs[tp] = self._epochs.get(tp, 0) + 1

    def health(self) -> tuple[Status, str]:
        if self.error:
            return Status.UNHEALTHY, self.error
        consumer = self._consumer
        if consumer is None:
            return Status.UNHEALTHY, "not connected yet"
        assigned = sorted(f"{tp.topic}-{tp.partition}" for tp in consumer.assignment())
        if not assigned:
            return Status.DEGRADED, "connected, no partitions assigned"
        return Status.HEALTHY, f"consuming {', '.join(assigned)}"

    async def aclose(self) -> None:
        """Commit the settled prefix one last time, then leave the group."""
        if self._consumer is None:
            return
        await self.commit()
        consumer, self._consumer = self._consumer, None
        await consumer.stop()


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, source: KafkaSource) -> None:
        self._source = source

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        await self._source.on_revoked(revoked)

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        log.info("partitions assigned", extra={"fields": {
            "partitions": sorted(f"{tp.topic}-{tp.partition}" for tp in assigned)}})
