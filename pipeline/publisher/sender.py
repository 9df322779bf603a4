"""Drains the spool to Kafka, in order, one batch at a time.

A batch is read from the spool, each record signed as it is handed to the producer, and
acknowledged in the spool only once the broker acknowledged every record of it. Records
that failed, or got no acknowledgement within `resend_after_s`, are sent again by a new
producer with fresh signatures (duplicates by event id are possible, a loss is not). A
record Kafka refuses for good (too large, corrupt: `pipeline.publisher.rejected`) is set
aside in `rejected.jsonl` and counted instead, so it cannot hold back the events after it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

from aiokafka import AIOKafkaProducer  # type: ignore[import-untyped,unused-ignore]

from pipeline.inbound.verifier import wall_clock_ms
from pipeline.publisher.frames import SpoolEntry
from pipeline.publisher.keys import RecordSigner
from pipeline.publisher.metrics import PublisherStats
from pipeline.publisher.options import SpoolOptions
from pipeline.publisher.producer import ProducerLink, backoff_s, stopped_within
from pipeline.publisher.rejected import RejectedFile, Rejection, rejection_reason
from pipeline.publisher.spool import Position, Spool

log = logging.getLogger(__name__)


class NoAcknowledgement(Exception):
    """The broker did not acknowledge a record within `resend_after_s`."""


class SpoolSender:
    """Runs (`run()`) on one event loop; `wake()` may be called from any thread."""

    def __init__(self, spool: Spool, link: ProducerLink, topic: str, signer: RecordSigner,
                 stats: PublisherStats, options: SpoolOptions,
                 clock_ms: Callable[[], int] = wall_clock_ms) -> None:
        self._spool = spool
        self._rejected = RejectedFile(spool.directory, topic, options.fsync, clock_ms)
        self._link = link
        self._topic = topic
        self._signer = signer
        self._stats = stats
        self._options = options
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake = asyncio.Event()
        self._stopping = asyncio.Event()
        self._progress = asyncio.Condition()

    def wake(self) -> None:
        """New entries were spooled (thread-safe; a no-op before `run` or after the loop)."""
        loop = self._loop
        if loop is None:
            return
        with contextlib.suppress(RuntimeError):  # a closed loop: the publisher is shut down
            loop.call_soon_threadsafe(self._wake.set)

    def stop(self) -> None:
        """Ask `run` to end (from the sender's loop)."""
        self._stopping.set()
        self._wake.set()

    async def flushed(self, target: Position) -> None:
        """Return once everything before `target` is acknowledged."""
        async with self._progress:
            await self._progress.wait_for(lambda: self._spool.start >= target)

    async def run(self) -> None:
        """Send until stopped; what was not acknowledged stays in the spool."""
        self._loop = asyncio.get_running_loop()
        position = self._spool.start
        while not self._stopping.is_set():
            self._wake.clear()  # before reading, so an append after the read wakes us
            entries, after = self._spool.read(position, self._options.batch_size)
            if not entries:
                await self._wake.wait()
                continue
            rejections = await self._deliver(entries)
            if rejections is None or not await self._set_aside(rejections):
                return
            self._spool.acknowledge(after, entries, [r.reason for r in rejections])
            position = after
            async with self._progress:
                self._progress.notify_all()

    async def _deliver(self, entries: Sequence[SpoolEntry]) -> list[Rejection] | None:
        """Send until the broker acknowledged every entry or refused it for good (those
        are returned); None when stopped first.

        The broker answers for a whole batch of one partition, so an entry that failed with
        a size or corrupt-record error may be innocent (a neighbour was too large, or the
        batch as a whole): each such entry is sent again alone, and only an entry refused
        alone is rejected. Entries that failed otherwise are sent again together."""
        groups, rejections, failures = deque([list(entries)]), [], 0
        while groups:
            group = groups.popleft()
            producer = await self._link.get(self._stopping)
            if producer is None:
                return None
            self._stats.count_sent(len(group), again=failures > 0)
            outcomes = await self._attempt(producer, group)
            failed = [(entry, error) for entry, error in zip(group, outcomes, strict=True)
                      if error is not None]
            if not failed:
                continue
            failures += 1
            if len(group) == 1 and (reason := rejection_reason(failed[0][1])) is not None:
                rejections.append(Rejection(group[0], reason, failed[0][1]))
                await self._link.replace(_reason(failed[0][1]))  # its sequence is off too
                continue
            await self._recover(failed, len(group), failures)
            groups.extendleft(reversed(_regroup(failed)))
        return rejections

    async def _recover(self, failed: list[tuple[SpoolEntry, BaseException]], sent: int,
                       failures: int) -> None:
        """Replace the producer (its idempotence sequence is out of step after any failed
        batch); wait before a resend unless the failures were only the records' own."""
        error = failed[0][1]
        stalled = isinstance(error, NoAcknowledgement)
        suspects = sum(1 for _, e in failed if rejection_reason(e) is not None)
        log.warning("publisher: %d of %d records to %s not acknowledged (%s: %s); replacing "
                    "the producer and sending them again%s", len(failed), sent, self._topic,
                    type(error).__name__, error,
                    " (one by one those Kafka may refuse for good)" if suspects else "")
        await self._link.replace("no_acknowledgement" if stalled else _reason(error))
        if not stalled and suspects < len(failed):
            await stopped_within(self._stopping, backoff_s(failures))

    async def _set_aside(self, rejections: list[Rejection]) -> bool:
        """Write the rejections to the rejected-records file, retried while the disk
        refuses (they stay in the spool meanwhile); False when stopped first."""
        if not rejections:
            return True
        failures = 0
        while True:
            try:
                await asyncio.to_thread(self._rejected.append, rejections)
                break
            except OSError as exc:
                failures += 1
                log.error("publisher: cannot write %s: %s; the %d rejected records stay in "
                          "the spool (and the events after them wait)", self._rejected.path,
                          exc.strerror, len(rejections))
                if await stopped_within(self._stopping, backoff_s(failures)):
                    return False
        for rejection in rejections:
            log.error("publisher: event %s (agent %s) refused by Kafka for good (%s: %s: %s); "
                      "set aside in %s, not sent again", rejection.event_id,
                      rejection.entry.key.decode("utf-8", "replace") or None, rejection.reason,
                      type(rejection.error).__name__, rejection.error, self._rejected.path)
        return True

    async def _attempt(self, producer: AIOKafkaProducer, entries: Sequence[SpoolEntry]
                       ) -> list[BaseException | None]:
        """Each entry's outcome: None when acknowledged, else the error."""
        futures: list[asyncio.Future[Any]] = []
        try:
            async with asyncio.timeout(self._options.resend_after_s):
                for entry in entries:
                    futures.append(await self._send(producer, entry))
                await asyncio.wait(futures)
        except TimeoutError:
            pass
        outcomes: list[BaseException | None] = []
        late = NoAcknowledgement(f"none within {self._options.resend_after_s:g}s")
        for index in range(len(entries)):
            future = futures[index] if index < len(futures) else None
            if future is None or not future.done():
                outcomes.append(late)
                if future is not None:
                    future.add_done_callback(_observe)
            elif future.cancelled():
                outcomes.append(NoAcknowledgement("the send was cancelled"))
            else:
                outcomes.append(future.exception())
        return outcomes

    async def _send(self, producer: AIOKafkaProducer, entry: SpoolEntry) -> asyncio.Future[Any]:
        try:
            delivery: asyncio.Future[Any] = await producer.send(
                self._topic, entry.value, key=entry.key or None,
                headers=self._signer.headers(entry.value))
        except Exception as exc:  # refused before sending (metadata, too large, closed…)
            delivery = asyncio.get_running_loop().create_future()
            delivery.set_exception(exc)
        return delivery


def _regroup(failed: list[tuple[SpoolEntry, BaseException]]) -> list[list[SpoolEntry]]:
    """The failed entries in order, for their next sends: each one that may be refused for
    good alone, each run of the others together."""
    groups: list[list[SpoolEntry]] = []
    together: list[SpoolEntry] | None = None
    for entry, error in failed:
        if rejection_reason(error) is not None:
            groups.append([entry])
            together = None
        elif together is None:
            together = [entry]
            groups.append(together)
        else:
            together.append(entry)
    return groups


def _reason(error: BaseException) -> str:
    name = type(error).__name__
    return "".join(f"_{c.lower()}" if c.isupper() else c for c in name).lstrip("_")


def _observe(future: asyncio.Future[Any]) -> None:
    """Retrieve a late outcome so asyncio does not log it as never retrieved."""
    if not future.cancelled():
        future.exception()
