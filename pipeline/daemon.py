"""Wiring and lifecycle: source → processor → one dispatcher per sink, plus dead-letter,
metrics and health, with the shutdown order of STYLE.md (stop reading → drain with a
deadline → cancel the rest → commit → close clients)."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from collections.abc import Sequence
from dataclasses import dataclass

from pipeline.deadletter.stores import DeadLetterDestination, DeadLetterEntry, DeadLetterWriter
from pipeline.delivery.dispatcher import SinkDispatcher
from pipeline.model import Record, Rejection, SignedEvent
from pipeline.ops.health import Check, HealthRegistry, Status
from pipeline.ops.metrics import Metrics
from pipeline.ops.server import OpsServer
from pipeline.processor import build_processor
from pipeline.settings import Settings, SinkSettings
from pipeline.signing.signers import Signer
from pipeline.sources.lines import Source
from pipeline.sources.offsets import OffsetTracker
from sinks.base import Sink, SinkError

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


class Daemon:
    """One pipeline run. Build it with its parts; `run` returns when input ends or a
    shutdown signal arrives and everything has settled (or the deadline passed)."""

    def __init__(self, settings: Settings, *, source: Source,
                 sinks: Sequence[tuple[Sink, SinkSettings]], signer: Signer,
                 deadletter: DeadLetterDestination, metrics: Metrics,
                 tracker: OffsetTracker) -> None:
        self._settings = settings
        self._source = source
        self._signer = signer
        self.metrics = metrics
        self.tracker = tracker
        self._processor = build_processor(settings, signer, metrics)
        self._destination = deadletter
        self._deadletter = DeadLetterWriter(deadletter, metrics,
                                            max_pending=settings.deadletter.max_pending)
        self.dispatchers = [
            SinkDispatcher(sink, sink_settings, metrics,
                           on_settled=self._settle, on_failed=self._dead_letter_failed)
            for sink, sink_settings in sinks
        ]
        self.room = _Room(self.dispatchers, self._deadletter, metrics)
        self.health = HealthRegistry()
        self._register_health()
        self.server = OpsServer(metrics.registry, self.health, settings.server.host,
                                settings.server.port)
        self._stop = asyncio.Event()
        self._signals = 0

    def request_stop(self) -> None:
        """Stop reading and drain (what SIGTERM/SIGINT do)."""
        self._stop.set()

    async def run(self) -> Outcome:
        self._destination.recover()  # before the first write: report and set aside torn lines
        await self.server.start()
        log.info("govpipe started", extra={"fields": self._summary()})
        loop = asyncio.get_running_loop()
        deadline: float | None = None
        try:
            async with asyncio.TaskGroup() as tasks:
                workers = [tasks.create_task(d.run(), name=f"dispatch-{d.name}")
                           for d in self.dispatchers]
                workers.append(tasks.create_task(self._deadletter.run(), name="deadletter"))
                committer = tasks.create_task(self._commit_periodically(), name="committer")
                await self._pump_until_stopped()
                deadline = loop.time() + self._settings.shutdown.timeout_s
                await self._drain(workers, deadline)
                committer.cancel()
        finally:
            await self._close(max(deadline or 0.0, loop.time() + CLOSE_GRACE_S))
        unsettled = self.tracker.outstanding
        if unsettled:
            log.error("%d records left unsettled: their offsets were not committed, so they "
                      "are read again (by this group) after a restart or rebalance", unsettled)
        log.info("govpipe stopped", extra={"fields": {"unsettled": unsettled,
                                                      **self._final_counts()}})
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
        async for batch in self._source.batches(self.room):
            self._ingest(batch)

    def _ingest(self, batch: Sequence[Record]) -> None:
        # One synchronous step per batch (no await inside), so a scrape sees either none or
        # all of it and counting per batch keeps every identity of SPEC §5 in every scrape.
        accepted: list[SignedEvent] = []
        for record in batch:
            result = self._processor.process(record)
            if isinstance(result, Rejection):
                self._reject(record, result)
            else:
                self.tracker.track(record.position, len(self.dispatchers))
                accepted.append(result)
        self.metrics.source_records.inc(len(batch))
        self.metrics.events_accepted.inc(len(accepted))
        for dispatcher in self.dispatchers:
            dispatcher.submit_many(accepted)

    def _reject(self, record: Record, result: Rejection) -> None:
        self.metrics.source_rejected.labels(result.reason).inc()
        self.tracker.track(record.position, 1)
        entry = DeadLetterEntry(origin="source", reason=result.reason, error=result.detail,
                                position=record.position, value=record.value,
                                key=record.key, headers=record.headers)
        self._deadletter.submit(entry, lambda: self.tracker.settle(record.position))

    def _settle(self, event: SignedEvent) -> None:
        self.tracker.settle(event.position)

    def _dead_letter_failed(self, sink: str, event: SignedEvent, error: SinkError) -> None:
        entry = DeadLetterEntry(origin=sink, reason=error.reason, error=str(error),
                                position=event.position, event=event.attributes, sink=sink)
        self._deadletter.submit(entry, lambda: self.tracker.settle(event.position))

    async def _commit_periodically(self) -> None:
        while True:
            await asyncio.sleep(self._settings.source.commit_interval_s)
            await self._source.commit()
            await self._source.refresh_metrics()

    async def _drain(self, workers: list[asyncio.Task[None]], deadline: float) -> None:
        for dispatcher in self.dispatchers:
            dispatcher.close()
            if self._stop.is_set():
                dispatcher.stop_retrying()  # a signal cuts retry waits short
        try:
            async with asyncio.timeout_at(deadline):
                await self.tracker.wait_idle()
        except TimeoutError:
            log.error("shutdown.timeout_s passed with %d records unsettled; cancelling",
                      self.tracker.outstanding)
            for task in workers:
                task.cancel()
        self._deadletter.close()

    async def _close(self, deadline: float) -> None:
        """Commit, then close every client, each step bounded: a broker or collector that
        does not answer must not hold the exit past `deadline` (a little past, at worst)."""
        loop = asyncio.get_running_loop()
        steps = [("source commit", self._source.commit)] + [
            (d.name, d.sink.aclose) for d in self.dispatchers] + [
            ("deadletter", self._destination.aclose), ("source", self._source.aclose),
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
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self._on_signal, signum)

    def _on_signal(self, signum: int) -> None:
        self._signals += 1
        if self._signals > 1:
            log.error("second signal: exiting at once")
            os._exit(128 + signum)
        log.info("%s received: stopping", signal.Signals(signum).name)
        self.request_stop()

    def _register_health(self) -> None:
        self.health.add("source", self._source.health)
        self.health.add("signer", self._signer_health)
        self.health.add("deadletter", self._deadletter_health)
        for dispatcher in self.dispatchers:
            self.health.add(f"sink:{dispatcher.name}", _sink_health(dispatcher, self))

    def _signer_health(self) -> tuple[Status, str]:
        signer = self._signer
        if signer.ephemeral:
            return Status.UNHEALTHY, (f"no signing key configured: {signer.alg} with an "
                                      "ephemeral key; nothing it signs can be verified later")
        return Status.HEALTHY, f"{signer.alg} key {signer.key_id} loaded"

    def _deadletter_health(self) -> tuple[Status, str]:
        problem = self._deadletter.last_error or self._destination.check()
        if problem:
            return Status.UNHEALTHY, problem
        return Status.HEALTHY, f"writable: {self._destination.description}"

    def deadletter_healthy(self) -> bool:
        return self._deadletter_health()[0] is Status.HEALTHY

    def _summary(self) -> dict[str, object]:
        return {"source": self._source.name, "sinks": [d.name for d in self.dispatchers],
                "signing_alg": self._signer.alg, "key_id": self._signer.key_id,
                "deadletter": self._destination.description,
                "listen": f"{self._settings.server.host}:{self.server.bound_port}"}

    def _final_counts(self) -> dict[str, object]:
        """The shutdown summary: what was read, and where every event ended."""
        sample = self.metrics.registry.get_sample_value
        counts: dict[str, object] = {
            name: sample(f"govpipe_{name}_total") or 0.0
            for name in ("source_records", "events_accepted")}
        counts["rejected"] = _sum_by_label(self.metrics, "govpipe_source_rejected_total")
        counts["sinks"] = {d.name: {
            outcome: _sum_by_label(self.metrics, f"govpipe_sink_{outcome}_total", d.name)
            for outcome in ("delivered", "failed", "dropped")} for d in self.dispatchers}
        return counts


def _sum_by_label(metrics: Metrics, name: str, sink: str | None = None) -> float:
    return sum(s.value for family in metrics.registry.collect() for s in family.samples
               if s.name == name and (sink is None or s.labels.get("sink") == sink))


class _Room:
    """The pipeline has room when every sink's queue does and the dead-letter backlog is
    under its bound."""

    def __init__(self, dispatchers: Sequence[SinkDispatcher], deadletter: DeadLetterWriter,
                 metrics: Metrics) -> None:
        self._dispatchers = dispatchers
        self._deadletter = deadletter
        self._metrics = metrics

    def available(self) -> bool:
        return self._deadletter.has_room() and all(d.has_room() for d in self._dispatchers)

    async def wait(self) -> None:
        for dispatcher in self._dispatchers:
            await dispatcher.wait_for_room()
        await self._deadletter.wait_for_room()

    def note_pause(self) -> None:
        cause = "sink_queue_full" if self._deadletter.has_room() else "deadletter_backlog"
        self._metrics.source_paused.labels(cause).inc()
        log.debug("reading paused: %s", cause.replace("_", " "),
                 extra={"fields": {"cause": cause, "deadletter_pending": self._deadletter.pending,
                                   "queued": {d.name: d.queued for d in self._dispatchers}}})


def _sink_health(dispatcher: SinkDispatcher, daemon: Daemon) -> Check:
    def check() -> tuple[Status, str]:
        state = dispatcher.breaker.state.value
        if state != "closed":
            # Open is degraded while events still reach the dead-letter, else unhealthy.
            status = Status.DEGRADED if daemon.deadletter_healthy() else Status.UNHEALTHY
            return status, f"circuit breaker {state}; last error: {dispatcher.last_error}"
        if dispatcher.last_error:
            return Status.DEGRADED, f"last send failed: {dispatcher.last_error}"
        return Status.HEALTHY, f"circuit closed, {dispatcher.queued} queued, last send ok"
    return check
