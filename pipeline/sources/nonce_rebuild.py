"""Rebuilding a partition's nonces when this replica is assigned it, with Kafka as the
durable log of what was seen: a replay onto the same partition is then caught whether or
not this replica (or this process) saw the original.

A short-lived consumer outside the group reads the records of the partition inside the
window before the position the group resumes at (the committed offset) and hands each to
`InboundVerifier.recall`: headers and signature are checked and the nonce remembered with
its offset. Nothing is decoded, signed, counted or delivered again.

Which records: those stamped (Kafka record timestamp) at most two windows before the
reference time, which is the append time of the last record before the resume position on
a LogAppendTime topic (a backlog is judged by the broker's time), else now. A nonce stays
live until its `agt-timestamp` + window, and a record passes only within one window of the
time it is judged at, so older records hold no live nonce.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError

from pipeline.inbound.verifier import InboundVerifier, wall_clock_ms
from pipeline.sources.kafka_record import LOG_APPEND_TIME, kafka_record

log = logging.getLogger(__name__)

POLL_MS = 500


class NonceRebuild:
    """Reads partitions back to `InboundVerifier.recall` what they already carried."""

    def __init__(self, verifier: InboundVerifier, connection: Mapping[str, Any],
                 consumer_options: Mapping[str, Any]) -> None:
        self._verifier = verifier
        self._connection = dict(connection)
        self._options = {**consumer_options, "group_id": None, "enable_auto_commit": False}

    def forget(self, revoked: set[TopicPartition]) -> None:
        """What was remembered for partitions this replica gave up."""
        self._verifier.forget({(tp.topic, tp.partition) for tp in revoked})

    async def run(self, resume_at: Mapping[TopicPartition, int]) -> int:
        """Recall the nonces before each partition's resume offset; how many were recalled."""
        consumer = AIOKafkaConsumer(**self._connection, **self._options)
        try:
            await consumer.start()
            consumer.assign(list(resume_at))
            recalled = 0
            for tp, end in resume_at.items():
                recalled += await self._partition(consumer, tp, end)
            return recalled
        finally:
            await consumer.stop()

    async def _partition(self, consumer: AIOKafkaConsumer, tp: TopicPartition,
                         end: int) -> int:
        first = (await consumer.beginning_offsets([tp]))[tp]
        if end <= first:
            return 0
        start = await self._start(consumer, tp, first, end)
        log.info("rebuilding nonces", extra={"fields": {
            "partition": f"{tp.topic}-{tp.partition}", "from": start, "to": end}})
        consumer.seek(tp, start)
        recalled = 0
        recall = self._verifier.recall
        while await consumer.position(tp) < end:
            fetched = await consumer.getmany(tp, timeout_ms=POLL_MS)
            for message in fetched.get(tp, []):
                if message.offset >= end:
                    break
                recalled += recall(kafka_record(tp, message))
        return recalled

    async def _start(self, consumer: AIOKafkaConsumer, tp: TopicPartition, first: int,
                     end: int) -> int:
        """The first offset stamped at most two windows before the reference time."""
        reference = await self._reference_ms(consumer, tp, max(first, end - 1), end)
        found = await consumer.offsets_for_times(
            {tp: max(0, reference - 2 * self._verifier.window_ms)})
        at = found.get(tp)
        return end if at is None else min(max(at.offset, first), end)

    @staticmethod
    async def _reference_ms(consumer: AIOKafkaConsumer, tp: TopicPartition, last: int,
                            end: int) -> int:
        """The append time of the last record before `end` on a LogAppendTime topic, else
        now (a control record or a gap there: now too)."""
        consumer.seek(tp, last)
        while await consumer.position(tp) < end:
            fetched = await consumer.getmany(tp, timeout_ms=POLL_MS, max_records=1)
            for message in fetched.get(tp, []):
                if message.offset < end and message.timestamp_type == LOG_APPEND_TIME:
                    return int(message.timestamp)
                return wall_clock_ms()
        return wall_clock_ms()


class PartitionRebuilds:
    """The rebuilds under way: an assigned partition stays paused in the group consumer
    until its nonces are back (fail closed: a failed rebuild is retried, never skipped).
    Without a `rebuild` (producer signatures not required) it holds nothing."""

    def __init__(self, rebuild: NonceRebuild | None) -> None:
        self._rebuild = rebuild
        self.holding: set[TopicPartition] = set()
        self._tasks: dict[asyncio.Task[None], _Rebuilding] = {}

    def start(self, consumer: AIOKafkaConsumer, assigned: set[TopicPartition],
              may_resume: Callable[[], bool]) -> None:
        """Pause `assigned` and rebuild them in the background; resume each one still
        assigned afterwards when `may_resume()` (else whoever paused reading resumes it)."""
        rebuild = self._rebuild
        if rebuild is None or not assigned:
            return
        consumer.pause(*assigned)
        self.holding |= assigned
        task = asyncio.create_task(
            self._until_rebuilt(rebuild, consumer, set(assigned), may_resume),
            name="nonce-rebuild")
        self._tasks[task] = _Rebuilding(consumer, set(assigned), may_resume)
        task.add_done_callback(self._done)

    def stop(self, revoked: set[TopicPartition] | None = None) -> None:
        """Cancel the rebuilds of `revoked` (all when None) and forget their nonces."""
        restart: list[_Rebuilding] = []
        for task, rebuilding in list(self._tasks.items()):
            if revoked is None or rebuilding.partitions & revoked:
                task.cancel()
                del self._tasks[task]
                if revoked is not None and (rebuilding.partitions - revoked):
                    restart.append(rebuilding)
        gone = set(self.holding) if revoked is None else revoked
        self.holding -= gone
        if self._rebuild is not None:
            self._rebuild.forget(gone)
        for rebuilding in restart:  # partitions kept: rebuilt again, never left paused
            kept = rebuilding.partitions - gone
            self.holding -= kept
            self.start(rebuilding.consumer, kept, rebuilding.may_resume)

    async def aclose(self) -> None:
        """Cancel every rebuild and wait for their consumers to close."""
        tasks = list(self._tasks)
        self.stop()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.pop(task, None)
        if not task.cancelled() and (error := task.exception()) is not None:
            log.error("nonce rebuild crashed: %r", error)  # not expected: the task retries

    async def _until_rebuilt(self, rebuild: NonceRebuild, consumer: AIOKafkaConsumer,
                             partitions: set[TopicPartition],
                             may_resume: Callable[[], bool]) -> None:
        backoff = 0.5
        while True:
            wanted = partitions & consumer.assignment()
            try:
                resume_at = {tp: await consumer.position(tp) for tp in wanted}
                recalled = await rebuild.run(resume_at)
                break
            except Exception as exc:
                # A bug here too only keeps the partitions paused (the source shows
                # degraded) while it is retried; the traceback when it is no Kafka error.
                log.error("cannot rebuild the nonces of %s (reading stays paused): %r; "
                          "retrying in %.1fs", _names(wanted), exc, backoff,
                          exc_info=not isinstance(exc, KafkaError | TimeoutError | OSError))
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 10.0)
        log.info("nonces rebuilt", extra={"fields": {"partitions": _names(wanted),
                                                     "recalled": recalled}})
        self.holding -= partitions
        if may_resume():
            consumer.resume(*(partitions & consumer.assignment()))


@dataclass(frozen=True, slots=True)
class _Rebuilding:
    consumer: AIOKafkaConsumer
    partitions: set[TopicPartition]
    may_resume: Callable[[], bool]


def _names(partitions: set[TopicPartition]) -> list[str]:
    return sorted(f"{tp.topic}-{tp.partition}" for tp in partitions)
