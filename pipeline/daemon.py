"""The lifecycle of one run, over parts the composition root (`pipeline.app`) built:
source → processor → one dispatcher per sink, the dead-letter writer, the ops server.

Shutdown goes in a fixed order: stop reading → drain with a deadline → cancel the rest →
commit → close the clients, each closing step bounded too.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from pipeline.deadletter.writer import DeadLetterWriter
from pipeline.delivery.dispatcher import SinkDispatcher
from pipeline.delivery.ledger import Ledger
from pipeline.delivery.room import PipelineRoom
from pipeline.model import Record
from pipeline.ops.health import HealthRegistry
from pipeline.ops.server import OpsServer
from pipeline.processor import EventProcessor
from pipeline.settings import Settings
from pipeline.sources.base import Source

log = logging.getLogger(__name__)

# Time the closing steps get after the drain: past the drain's deadline when it used all of
# shutdown.timeout_s, so the final commit still gets a chance.
CLOSE_GRACE_S = 5.0
MIN_STEP_S = 0.5


@dataclass(frozen=True, slots=True)
class Outcome:
    """How a run ended: the exit code and the records left unsettled."""

    exit_code: int
    unsettled: int


@dataclass(frozen=True, slots=True)
class Parts:
    """Everything a run needs, built and wired by `pipeline.app.build_daemon`."""

    settings: Settings
    source: Source
    processor: EventProcessor
    ledger: Ledger
    dispatchers: Sequence[SinkDispatcher]
    deadletters: DeadLetterWriter
    health: HealthRegistry
    server: OpsServer
    started_fields: dict[str, object]  # what "govpipe started" logs
    reload: Callable[[], object] | None = None  # what SIGHUP does (pipeline.reload)
    # Set when a commit is wanted before the commit interval ends (exactly-once: enough
    # records staged for their transactions).
    commit_wanted: asyncio.Event | None = None


class Daemon:
    """One pipeline run; `run` returns when input ends or a shutdown signal arrives and
    everything has settled (or the deadline passed)."""

    def __init__(self, parts: Parts) -> None:
        self._parts = parts
        self._settings = parts.settings
        self.source = parts.source
        self.ledger = parts.ledger
        self.dispatchers = parts.dispatchers
        self.health = parts.health
        self.server = parts.server
        self._processor = parts.processor
        self._deadletters = parts.deadletters
        self.room = PipelineRoom(parts.dispatchers, parts.deadletters, parts.ledger)
        self._stop = asyncio.Event()
        self._signals = 0

    def request_stop(self) -> None:
        """Stop reading and drain (what SIGTERM/SIGINT do)."""
        self._stop.set()

    async def run(self) -> Outcome:
        self._deadletters.recover()  # before the first write: report and set aside torn lines
        await self.server.start()
        listen = f"{self.server.host}:{self.server.bound_port}"
        log.info("govpipe started", extra={"fields": {**self._parts.started_fields,
                                                      "listen": listen}})
        loop = asyncio.get_running_loop()
        deadline: float | None = None
        try:
            async with asyncio.TaskGroup() as tasks:
                workers = [tasks.create_task(d.run(), name=f"dispatch-{d.name}")
                           for d in self.dispatchers]
                workers.append(tasks.create_task(self._deadletters.run(), name="deadletter"))
                committer = tasks.create_task(self._commit_periodically(), name="committer")
                await self._pump_until_stopped()
                deadline = loop.time() + self._settings.shutdown.timeout_s
                await self._drain(workers, deadline)
                committer.cancel()
        finally:
            await self._close(max(deadline or 0.0, loop.time() + CLOSE_GRACE_S))
        return self._outcome()

    def _outcome(self) -> Outcome:
        unsettled = self.ledger.tracker.outstanding
        counts = self.ledger.counts
        if unsettled:
            log.error("%d records left unsettled: their offsets were not committed, so they "
                      "are read again (by this group) after a restart or rebalance", unsettled)
        elif staged := sum(sink.in_flight for sink in counts.sinks.values()):
            # Exactly-once: settled into transactions that never committed (the last
            # commit failed). Their offsets were not committed either: read again.
            log.error("%d events staged for transactions that did not commit: their offsets "
                      "were not committed, so they are read again after a restart", staged)
            unsettled = staged
        if broken := counts.broken():
            log.error("accounting identities broken at shutdown: %s", broken)
        log.info("govpipe stopped", extra={"fields": {"unsettled": unsettled,
                                                      **counts.summary()}})
        return Outcome(exit_code=0 if unsettled == 0 else 1, unsettled=unsettled)

    async def _pump_until_stopped(self) -> None:
        pump = asyncio.create_task(self._pump(), name="pump")
        stop = asyncio.create_task(self._stop.wait(), name="stop-wait")
        await asyncio.wait({pump, stop}, return_when=asyncio.FIRST_COMPLETED)
        for task in (pump, stop):
            task.cancel()
        await asyncio.gather(pump, stop, return_exceptions=True)
        if not pump.cancelled() and (error := pump.exception()) is not None:
            raise error

    async def _pump(self) -> None:
        async for batch in self.source.batches(self.room):
            self._ingest(batch)

    def _ingest(self, batch: Sequence[Record]) -> None:
        # One synchronous step per batch (no await inside): a scrape sees none or all of it,
        # so every accounting identity holds in every scrape.
        process = self._processor.process
        accepted, rejected = self.ledger.ingest([process(record) for record in batch])
        if rejected:
            self._deadletters.rejected(rejected)
        for dispatcher in self.dispatchers:
            dispatcher.submit_many(accepted)

    async def _commit_periodically(self) -> None:
        while True:
            await self._commit_due()
            await self.source.commit()
            await self.source.refresh_metrics()

    async def _commit_due(self) -> None:
        await commit_due(self._settings.source.commit_interval_s, self._parts.commit_wanted)

    async def _drain(self, workers: list[asyncio.Task[None]], deadline: float) -> None:
        for dispatcher in self.dispatchers:
            dispatcher.close()
            if self._stop.is_set():
                dispatcher.stop_retrying()  # a signal cuts retry waits short
        tracker = self.ledger.tracker
        try:
            async with asyncio.timeout_at(deadline):
                await tracker.wait_idle()
        except TimeoutError:
            log.error("shutdown.timeout_s passed with %d records unsettled; cancelling",
                      tracker.outstanding)
        self._deadletters.close()
        # Idle is not the end: a dead-letter write that keeps failing for partitions a
        # revocation let go, or a dispatcher still sending events of forgotten partitions,
        # would hold the task group (and the exit) without limit. They get what is left of
        # the deadline, then are cancelled.
        loop = asyncio.get_running_loop()
        _, running = await asyncio.wait(workers, timeout=max(0.0, deadline - loop.time()))
        if running:
            log.error("shutdown deadline passed with %s still running; cancelling",
                      ", ".join(sorted(task.get_name() for task in running)))
        for task in running:
            task.cancel()

    async def _close(self, deadline: float) -> None:
        """Commit, then close every client, each step bounded: a broker or collector that
        does not answer must not hold the exit past `deadline` (a little past, at worst)."""
        loop = asyncio.get_running_loop()
        steps = [("source commit", self.source.commit)] + [
            (d.name, d.aclose) for d in self.dispatchers] + [
            ("deadletter", self._deadletters.aclose), ("source", self.source.aclose),
            ("server", self.server.aclose)]
        for name, step in steps:
            try:
                async with asyncio.timeout_at(max(deadline, loop.time() + MIN_STEP_S)):
                    await step()
            except TimeoutError:
                log.error("closing %s timed out; going on with the shutdown", name)
            except Exception:
                log.exception("closing %s failed", name)

    def install_signal_handlers(self) -> None:
        """SIGTERM/SIGINT drain and stop (a second one exits at once); SIGHUP reloads."""
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self._on_signal, signum)
        loop.add_signal_handler(signal.SIGHUP, self._on_hangup)

    def _on_hangup(self) -> None:
        # Between two batches: every record of a batch is signed with one key.
        log.info("SIGHUP received: reloading the configuration")
        if self._parts.reload is not None:
            self._parts.reload()

    def _on_signal(self, signum: int) -> None:
        self._signals += 1
        if self._signals > 1:
            log.error("second signal: exiting at once")
            os._exit(128 + signum)
        log.info("%s received: stopping", signal.Signals(signum).name)
        self.request_stop()


async def commit_due(interval_s: float, wanted: asyncio.Event | None) -> None:
    """Return after `interval_s`, or sooner once `wanted` is set (exactly-once: enough
    records staged for their transactions); `wanted` is cleared on return."""
    if wanted is None:
        await asyncio.sleep(interval_s)
        return
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(interval_s):
            await wanted.wait()
    # Taken: the source may commit nothing (no offset due), and then nothing else clears
    # it; left set, the next wait would return at once, again and again.
    wanted.clear()
