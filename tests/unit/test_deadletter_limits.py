"""File dead-letters are private (folder 0700, files 0600, whatever the umask), one file per
UTC day, and capped by `deadletter.max_bytes`: at the cap nothing more is written, the
writer holds what does not fit and has no room (the source stops reading) until room is
made; then everything held is written. Nothing is lost, nothing is written past the cap."""

from __future__ import annotations

import asyncio
import logging
import os
import stat
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from pipeline.deadletter.entry import DeadLetterEntry
from pipeline.deadletter.file import FileDeadLetter
from pipeline.deadletter.store import DeadLetterFull
from pipeline.deadletter.writer import DeadLetterWriter
from pipeline.delivery.ledger import Ledger
from pipeline.model import Position, Record, Rejection
from pipeline.ops.health import Status
from pipeline.ops.metrics import Metrics
from tests.support.metrics import sample
from tests.support.waiting import eventually


def entries(first: int, count: int) -> list[DeadLetterEntry]:
    return [DeadLetterEntry(origin="source", reason="invalid_json", error="not JSON",
                            position=Position("events", 0, offset), value=b"v" * 100)
            for offset in range(first, first + count)]


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def total_bytes(directory: Path) -> int:
    return sum(path.stat().st_size for path in directory.glob("deadletter-*.jsonl"))


@pytest.fixture(params=[0o000, 0o022, 0o077, 0o277])
def umask(request: pytest.FixtureRequest) -> Iterator[int]:
    old = os.umask(request.param)
    yield request.param
    os.umask(old)


async def test_folder_0700_and_files_0600_whatever_the_umask(tmp_path: Path,
                                                             umask: int) -> None:
    store = FileDeadLetter(tmp_path / "parent" / "dlq")
    await store.write(entries(0, 2))
    await store.mark_replayed(["some-entry"])
    assert mode(store.directory) == 0o700
    files = sorted(store.directory.iterdir())
    assert [path.name for path in files][-1] == "replayed.jsonl"
    assert {mode(path) for path in files} == {0o600}
    assert len((await store.read()).entries) == 2


async def test_a_torn_tail_set_aside_is_private_too(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        store = FileDeadLetter(tmp_path / "dlq")
        await store.write(entries(0, 1))
        [path] = store.directory.glob("deadletter-*.jsonl")
        with path.open("ab") as handle:
            handle.write(b'{"id": "torn')
        assert store.recover()
        [torn] = store.directory.glob("*.torn")
        assert mode(torn) == 0o600
    finally:
        os.umask(old)


async def test_a_looser_folder_and_files_are_tightened_with_a_warning(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    directory = tmp_path / "dlq"
    directory.mkdir()
    old_file = directory / "deadletter-2020-01-01.jsonl"
    old_file.write_bytes(entries(0, 1)[0].to_json() + b"\n")
    os.chmod(directory, 0o755)
    os.chmod(old_file, 0o644)
    caplog.set_level(logging.WARNING, logger="pipeline.deadletter.private")
    store = FileDeadLetter(directory)
    assert store.recover() == []
    assert mode(directory) == 0o700
    assert mode(old_file) == 0o600
    warned = " ".join(record.getMessage() for record in caplog.records)
    assert str(directory) in warned
    assert str(old_file) in warned
    # Loosened again while running: the next write tightens the folder and today's file.
    os.chmod(directory, 0o755)
    await store.write(entries(1, 1))
    assert mode(directory) == 0o700


async def test_one_file_per_utc_day_and_read_gets_them_all(tmp_path: Path) -> None:
    # 23:30 at UTC-05:00 is already the next day in UTC: the name follows UTC.
    now = datetime(2026, 3, 1, 23, 30, tzinfo=timezone(timedelta(hours=-5)))
    store = FileDeadLetter(tmp_path / "dlq", clock=lambda: now)
    await store.write(entries(0, 2))
    now += timedelta(days=1)
    await store.write(entries(2, 3))
    names = sorted(path.name for path in store.directory.glob("deadletter-*.jsonl"))
    assert names == ["deadletter-2026-03-02.jsonl", "deadletter-2026-03-03.jsonl"]
    stored = await store.read()
    assert [entry["source"]["offset"] for entry in stored.entries] == [0, 1, 2, 3, 4]


async def test_the_cap_takes_only_whole_entries_that_fit(tmp_path: Path) -> None:
    size = len(entries(0, 1)[0].to_json()) + 1
    day = datetime(2026, 3, 1, tzinfo=UTC)
    store = FileDeadLetter(tmp_path / "dlq", max_bytes=int(size * 4.5),
                           clock=lambda: day)
    await store.write(entries(0, 2))
    day += timedelta(days=1)  # the cap counts every day's file
    with pytest.raises(DeadLetterFull) as full:
        await store.write(entries(2, 5))
    assert full.value.written == 2
    assert total_bytes(store.directory) == size * 4 <= store.max_bytes  # type: ignore[operator]
    with pytest.raises(DeadLetterFull) as again:
        await store.write(entries(4, 3))
    assert again.value.written == 0
    # Room made (old entries replayed and their file archived): writes go on.
    (store.directory / "deadletter-2026-03-01.jsonl").unlink()
    await store.write(entries(4, 2))
    assert len((await store.read()).entries) == 4


async def test_a_full_dead_letter_stops_reading_until_room_is_made(tmp_path: Path) -> None:
    size = len(entries(0, 1)[0].to_json()) + 1
    registry = CollectorRegistry()
    ledger = Ledger(registry, ["memory"])
    store = FileDeadLetter(tmp_path / "dlq", max_bytes=size * 3)
    writer = DeadLetterWriter(store, ledger, Metrics(registry), retry_backoff_s=0.01)
    rejections = [Rejection("invalid_json", "not JSON", Record(b"v" * 100, entry.position))
                  for entry in entries(0, 5)]
    for rejection in rejections:
        ledger.tracker.track(rejection.record.position, 1)
    run = asyncio.create_task(writer.run())
    writer.rejected(rejections)
    await eventually(lambda: writer.full is not None, 10)  # written from a worker thread
    room = asyncio.create_task(writer.wait_for_room())
    await asyncio.sleep(0)  # the waiter runs, and waits
    assert not writer.has_room()
    assert not room.done()
    assert writer.pending == 2
    assert ledger.tracker.outstanding == 2  # held: not settled, so never committed
    assert total_bytes(store.directory) <= size * 3
    assert writer.health()[0] is Status.DEGRADED
    assert "max_bytes" in writer.health()[1]
    assert sample(registry, "govpipe_deadletter_full") == 1
    assert sample(registry, "govpipe_deadletter_cap_reached_total") == 1
    assert sample(registry, "govpipe_deadletter_errors_total") == 0

    for path in store.directory.glob("deadletter-*.jsonl"):
        path.unlink()  # replayed and archived by the operator
    await asyncio.wait_for(room, 10)
    writer.close()
    await asyncio.wait_for(run, 10)
    assert writer.full is None
    assert writer.has_room()
    assert writer.pending == 0
    assert ledger.tracker.outstanding == 0
    assert len((await store.read()).entries) == 2
    assert writer.health()[0] is Status.HEALTHY
    assert sample(registry, "govpipe_deadletter_full") == 0
    assert sample(registry, "govpipe_deadletter_cap_reached_total") == 1


async def test_an_entry_larger_than_half_the_cap_is_kept_as_a_summary(tmp_path: Path) -> None:
    # JSON escapes each control byte as \u00XX: a 1,000-byte record makes a ~6 KB entry.
    # An entry that can never fit would stop the source for good; its summary names it.
    record = b"\x01" * 1000
    entry = DeadLetterEntry(origin="source", reason="invalid_json", error="not JSON",
                            position=Position("events", 0, 9), value=record)
    assert len(entry.to_json()) > 4096
    store = FileDeadLetter(tmp_path / "dlq", max_bytes=4096)
    await store.write([entry])
    [kept] = (await store.read()).entries
    assert kept["truncated"] is True
    assert kept["value_bytes"] == len(record)
    assert kept["source"]["offset"] == 9
