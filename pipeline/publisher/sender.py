"""Drains the spool to Kafka, in order, one batch at a time.

A batch is read from the spool, each record signed as it is handed to the producer, and
acknowledged in the spool only once the broker acknowledged every record of it. Records
that failed, or got no acknowledgement within `resend_after_s`, are sent again by a new
producer with fresh signatures (duplicates by event id are possible, a loss is not).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from typing import Any

from aiokafka import AIOKafkaProducer  # type: ignore[import-untyped,unused-ignore]

from pipeline.publisher.frames import SpoolEntry
from pipeline.publisher.keys import RecordSigner
from pipeline.publisher.metrics import PublisherStats
from pipeline.publisher.options import SpoolOptions
from pipeline.publisher.producer import ProducerLink, backoff_s, stopped_within
from pipeline.publisher.spool import Position, Spool

log = logging.getLogger(__name__)


class NoAcknowledgement(Exception):
    """The broker did not acknowledge a record within `resend_after_s`."""


class SpoolSender:
    """Runs (`run()`) on one event loop; `wake()` may be called from any thread."""

    def __init__(self, spool: Spool, link: ProducerLink, topic: str, signer: RecordSigner,
                 stats: PublisherStats, options: SpoolOptions) -> None:
        self._spool = spool
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
            if not await self._deliver(entries):
                return
            self._spool.acknowledge(after, entries)
            position = after
            async with self._progress:
                self._progress.notify_all()

    async def _deliver(self, entries: Sequence[SpoolEntry]) -> bool:
        """Send until the broker acknowledged every entry; False when stopped first."""
        pending, failures = list(entries), 0
        while pending:
            producer = await self._link.get(self._stopping)
            if producer is None:
                return False
            self._stats.count_sent(len(pending), again=failures > 0)
            outcomes = await self._attempt(producer, pending)
            failed = [(entry, error) for entry, error in zip(pending, outcomes, strict=True)
                      if error is not None]
            if not failed:
                return True
            failures += 1
            await self._recover(failed, len(pending), failures)
            pending = [entry for entry, _ in failed]
        return True

    async def _recover(self, failed: list[tuple[SpoolEntry, BaseException]], sent: int,
                       failures: int) -> None:
        error = failed[0][1]
        stalled = isinstance(error, NoAcknowledgement)
        log.warning("publisher: %d of %d records to %s not acknowledged (%s: %s); replacing "
                    "the producer and sending them again", len(failed), sent, self._topic,
                    type(error).__name__, error)
        await self._link.replace("no_acknowledgement" if stalled else _reason(error))
        if not stalled:
            await stopped_within(self._stopping, backoff_s(failures))

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


def _reason(error: BaseException) -> str:
    name = type(error).__name__
    return "".join(f"_{c.lower()}" if c.isupper() else c for c in name).lstrip("_")


def _observe(future: asyncio.Future[Any]) -> None:
    """Retrieve a late outcome so asyncio does not log it as never retrieved."""
    if not future.cancelled():
        future.exception()
