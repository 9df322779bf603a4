"""`Publisher`: the asyncio publisher. Events go into a durable spool at once; a
background sender drains the spool to Kafka (see `pipeline.publisher.sender`)."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry

from pipeline.inbound.verifier import wall_clock_ms
from pipeline.publisher.keys import RecordSigner, SignKey, load_producer_key
from pipeline.publisher.metrics import PublisherStats, attach_metrics
from pipeline.publisher.options import SpoolOptions
from pipeline.publisher.producer import ProducerLink, stopped_within
from pipeline.publisher.sender import SpoolSender
from pipeline.publisher.spool import Spool
from pipeline.publisher.spooler import EventSpooler

log = logging.getLogger(__name__)

DEFAULT_TOPIC = "governance.events"


class PublishError(Exception):
    """An event was refused (`reason`: not_finite, too_large, spool_full…), never spooled."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"event refused: {reason}")
        self.reason = reason


def default_spool_dir(topic: str) -> Path:
    """`./govpipe-spool/<topic>`, when no spool directory is given."""
    return Path("govpipe-spool") / topic


class Publisher:
    """Publishes onto one topic through a spool; `async with`, or `start()` / `aclose()`."""

    def __init__(self, bootstrap_servers: str, topic: str = DEFAULT_TOPIC, *,
                 spool_dir: str | os.PathLike[str] | None = None,
                 spool: SpoolOptions | None = None, sign_key: SignKey | None = None,
                 sender: str = "", registry: CollectorRegistry | None = None,
                 client_options: Mapping[str, Any] | None = None,
                 clock_ms: Callable[[], int] = wall_clock_ms) -> None:
        """Checks the key and opens (locks) the spool here; connects to Kafka later, in the
        background, so the broker may be down. `spool` (SpoolOptions) or `spool_dir` (the
        defaults otherwise). `sign_key`: see `pipeline.publisher.keys`. `registry`: where
        the `govpipe_publisher_*` series go (a private one by default). `client_options`:
        more aiokafka keywords (TLS, SASL; `pipeline.kafka_connection.client_options`)."""
        if spool is not None and spool_dir is not None:
            raise ValueError("give spool_dir or spool, not both")
        key = load_producer_key(sign_key, sender)
        self.topic = topic
        self.options = spool or SpoolOptions(Path(spool_dir) if spool_dir is not None
                                             else default_spool_dir(topic))
        self.registry = registry if registry is not None else CollectorRegistry()
        self._stats = PublisherStats()
        self._spool = Spool(self.options, clock_ms)
        attach_metrics(self.registry, topic, self._spool, self._stats, clock_ms)
        link = ProducerLink({**(client_options or {}), "bootstrap_servers": bootstrap_servers},
                            self._stats)
        self._link = link
        self._sender = SpoolSender(self._spool, link, topic, RecordSigner(key, sender),
                                   self._stats, self.options, clock_ms)
        self._spooler = EventSpooler(self._spool, self._stats, self.options.max_event_bytes,
                                     self._sender.wake)
        self._tasks: list[asyncio.Task[None]] = []
        self._closing = asyncio.Event()
        self._closed = False

    @property
    def spool_dir(self) -> Path:
        """Where the spool lives."""
        return self._spool.directory

    async def start(self) -> None:
        """Start sending in the background; callable twice."""
        if self._tasks or self._closed:
            return
        self._tasks.append(asyncio.create_task(self._sender.run(), name="publisher-sender"))
        if self.options.fsync == "interval":
            self._tasks.append(asyncio.create_task(self._sync_periodically(),
                                                   name="publisher-fsync"))
        for task in self._tasks:
            task.add_done_callback(_report_crash)

    async def __aenter__(self) -> Publisher:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    def spool_events(self, events: Iterable[Any]) -> list[str | None]:
        """Spool events now, from any thread: per event None, or why it was refused."""
        events = list(events)
        if self._closed:
            log.warning("publisher: %d events after close, not spooled", len(events))
            return ["closed"] * len(events)
        return self._spooler.spool(events)

    async def publish(self, event: Any) -> None:
        """Spool one event (a dict or an object with to_dict()); PublishError if refused."""
        reason = self.spool_events([event])[0]
        if reason is not None:
            raise PublishError(reason)

    async def publish_many(self, events: Iterable[Any]) -> list[str | None]:
        """Spool events: per event None, or the reason it was refused (logged, counted)."""
        return self.spool_events(events)

    async def flush(self, timeout_s: float) -> bool:
        """Wait until the broker acknowledged everything spooled so far (or Kafka refused it
        for good: set aside in rejected.jsonl); False at timeout."""
        target = self._spool.end
        if self._spool.start >= target:
            return True
        if not self._tasks or self._tasks[0].done():
            return False
        try:
            async with asyncio.timeout(max(0.0, timeout_s)):
                await self._sender.flushed(target)
        except TimeoutError:
            return False
        return True

    async def aclose(self, timeout_s: float = 30.0) -> bool:
        """Stop accepting, send what is spooled within `timeout_s`, stop; True when
        the spool is empty (everything acknowledged or set aside as rejected). What was not
        sent stays in the spool for the next start."""
        if self._closed:
            return self._spool.counts().entries == 0
        self._closed = True
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(0.0, timeout_s)
        drained = await self.flush(timeout_s * 0.8)
        self._sender.stop()
        self._closing.set()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._link.close(max(0.1, deadline - loop.time()))
        counts = self._spool.counts()
        self._spool.close()
        if counts.entries:
            log.warning("publisher: closed with %d events not yet acknowledged; they stay in "
                        "spool %s and are sent at the next start", counts.entries,
                        self.spool_dir)
        return drained and counts.entries == 0

    async def _sync_periodically(self) -> None:
        while not await stopped_within(self._closing, self.options.fsync_interval_s):
            await asyncio.to_thread(self._spool.sync)


def _report_crash(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and (error := task.exception()) is not None:
        log.error("publisher: %s stopped: %s: %s; spooled events stay in the spool and are "
                  "sent at the next start", task.get_name(), type(error).__name__, error,
                  exc_info=error)
