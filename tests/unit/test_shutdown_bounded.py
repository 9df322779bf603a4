"""The drain's deadline bounds the whole shutdown, also once every tracked record is settled
or forgotten: workers still running then (a dead-letter write failing forever, a sink send
that never returns, both for partitions a revocation let go) are cancelled at the deadline
instead of holding the exit without limit."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path

from prometheus_client import CollectorRegistry

from pipeline.app import build_daemon
from pipeline.daemon import CLOSE_GRACE_S, Daemon
from pipeline.deadletter.entry import DeadLetterEntry
from pipeline.deadletter.store import DeadLetterError
from pipeline.model import SignedEvent
from pipeline.settings import SinkSettings, load_settings
from pipeline.signing.signers import HmacSigner
from sinks.base import Sink
from tests.support.events import event_value
from tests.support.fakes import MemorySink, StoreStub

SHUTDOWN_S = 1.0
# The drain's deadline, then the bounded closing steps, then slack for a loaded machine.
RETURNS_WITHIN_S = SHUTDOWN_S + CLOSE_GRACE_S + 5.0


class FailingStore(StoreStub):
    """A dead-letter store whose every write fails (a topic that refuses the entries)."""

    description = "failing store"

    def __init__(self) -> None:
        self.attempts = 0
        self.tried = asyncio.Event()

    async def write(self, entries: Sequence[DeadLetterEntry]) -> None:
        self.attempts += 1
        self.tried.set()
        raise DeadLetterError("refused")


class StuckSink:
    """A sink whose send never returns (a collector that accepts and never answers)."""

    name = "stuck"

    def __init__(self) -> None:
        self.entered = asyncio.Event()

    async def send(self, batch: Sequence[SignedEvent]) -> None:
        self.entered.set()
        await asyncio.Event().wait()

    async def aclose(self) -> None:
        return None


def daemon_on(lines: list[bytes], tmp_path: Path, sink: Sink,
              store: FailingStore | None = None) -> Daemon:
    source = tmp_path / "input.jsonl"
    source.write_bytes(b"".join(line + b"\n" for line in lines))
    settings = load_settings(None, {
        "GOVPIPE_SOURCE__KIND": "file", "GOVPIPE_SOURCE__PATH": str(source),
        "GOVPIPE_SERVER__LISTEN": "127.0.0.1:0", "GOVPIPE_DEADLETTER__KIND": "file",
        "GOVPIPE_DEADLETTER__PATH": str(tmp_path / "deadletter"),
        "GOVPIPE_SHUTDOWN__TIMEOUT_S": str(SHUTDOWN_S)})
    return build_daemon(settings, {}, sinks=[(sink, SinkSettings(enabled=True))],
                        store=store, signer=HmacSigner(bytes(range(32))),
                        registry=CollectorRegistry())


def revoke_everything(daemon: Daemon, source: Path) -> None:
    """What a revocation does to the tracker: the partitions' records are no longer ours."""
    daemon.ledger.tracker.forget([(str(source), 0)])


async def run_bounded(daemon: Daemon) -> None:
    task = asyncio.create_task(daemon.run())
    try:
        await asyncio.wait_for(asyncio.shield(task), RETURNS_WITHIN_S)
    finally:
        if not task.done():  # the old behaviour: clean up the hung run for the next test
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)


async def test_a_dead_letter_write_failing_forever_after_a_revocation_is_cancelled(
        tmp_path: Path) -> None:
    # Was: the tracker went idle (the partition was forgotten), nothing was cancelled and the
    # TaskGroup waited for the writer, which retries a failing write until cancelled: forever.
    store = FailingStore()
    daemon = daemon_on([b"not json"], tmp_path, MemorySink(), store)
    task = asyncio.create_task(run_bounded(daemon))
    await asyncio.wait_for(store.tried.wait(), 10)
    revoke_everything(daemon, tmp_path / "input.jsonl")
    await asyncio.wait_for(task, RETURNS_WITHIN_S + 1)
    assert daemon.ledger.tracker.outstanding == 0
    assert store.attempts >= 1


async def test_a_sink_send_stuck_after_a_revocation_is_cancelled(tmp_path: Path) -> None:
    # Was: the dispatcher holding events of a forgotten partition kept the TaskGroup (and
    # the exit) waiting on a send that never returns.
    sink = StuckSink()
    daemon = daemon_on([event_value(1, "stuck")], tmp_path, sink)
    task = asyncio.create_task(run_bounded(daemon))
    await asyncio.wait_for(sink.entered.wait(), 10)
    revoke_everything(daemon, tmp_path / "input.jsonl")
    await asyncio.wait_for(task, RETURNS_WITHIN_S + 1)


async def test_events_staged_for_transactions_that_never_committed_fail_the_run(
        tmp_path: Path) -> None:
    # Exactly-once settles an event into its transaction at once; if the last commit
    # failed, every record is settled yet the events were never written: not a clean exit.
    sink = MemorySink()
    daemon = daemon_on([], tmp_path, sink)
    daemon.ledger.submitted(sink.name, 2)  # staged, the transaction never committed
    outcome = daemon._outcome()
    await daemon.source.aclose()
    assert (outcome.exit_code, outcome.unsettled) == (1, 2)
