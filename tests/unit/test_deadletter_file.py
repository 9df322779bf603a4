"""The file dead-letter writes each batch whole or not at all, and repairs at start-up what a
crash left half-written: no entry ever survives only inside an unreadable line."""

from __future__ import annotations

import errno
import logging
import os
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest

from pipeline.deadletter.entry import DeadLetterEntry
from pipeline.deadletter.file import FileDeadLetter
from pipeline.deadletter.kafka import KafkaDeadLetter
from pipeline.deadletter.store import DeadLetterError
from pipeline.model import Position


def batch(first: int, count: int) -> list[DeadLetterEntry]:
    return [DeadLetterEntry(origin="source", reason="invalid_json", error="not JSON",
                            position=Position("events", 0, offset), value=b"v" * 100)
            for offset in range(first, first + count)]


def ids(entries: list[DeadLetterEntry]) -> list[str]:
    return [entry.entry_id for entry in entries]


def only_file(directory: Path) -> Path:
    [path] = directory.glob("deadletter-*.jsonl")
    return path


def torn_files(directory: Path) -> list[Path]:
    return list(directory.glob("*.torn"))


def stored_ids(directory: Path) -> list[str]:
    """Ids in file order, after checking the file ends with a complete line and every line
    is a JSON object."""
    content = only_file(directory).read_bytes()
    assert content.endswith(b"\n")
    return [orjson.loads(line)["id"] for line in content.splitlines()]


class FullDisk:
    """`os.write` as a nearly full file system does it, for files under `directory`: a short
    write of what still fits, then ENOSPC. Other descriptors are written for real."""

    def __init__(self, directory: Path, free: int) -> None:
        self.directory = str(directory.resolve())
        self.free = free
        self._write = os.write

    def write(self, fd: int, data: bytes | memoryview) -> int:
        if not os.readlink(f"/proc/self/fd/{fd}").startswith(self.directory):
            return self._write(fd, data)
        if self.free <= 0:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        written = self._write(fd, bytes(memoryview(data)[: self.free]))
        self.free -= written
        return written


def failing_once(real: Callable[..., None], code: int) -> Callable[..., None]:
    failures = [OSError(code, os.strerror(code))]

    def call(*args: int) -> None:
        if failures:
            raise failures.pop()
        real(*args)
    return call


async def test_a_write_cut_short_by_a_full_disk_leaves_only_whole_entries(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = FileDeadLetter(tmp_path)
    first, second = batch(0, 2), batch(2, 3)
    await store.write(first)
    before = only_file(tmp_path).read_bytes()
    disk = FullDisk(tmp_path, free=150)  # a part of the next batch's first entry fits
    monkeypatch.setattr(os, "write", disk.write)

    with pytest.raises(DeadLetterError, match="No space left"):
        await store.write(second)
    assert only_file(tmp_path).read_bytes() == before
    with pytest.raises(DeadLetterError):  # still full: the retry fails cleanly as well
        await store.write(second)
    assert only_file(tmp_path).read_bytes() == before

    disk.free = 1 << 20  # space again: the writer's retry appends the batch whole, once
    await store.write(second)
    assert stored_ids(tmp_path) == ids(first + second)


async def test_a_failed_fsync_takes_the_whole_batch_back(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = FileDeadLetter(tmp_path)
    first, second = batch(0, 1), batch(1, 2)
    await store.write(first)
    before = only_file(tmp_path).read_bytes()
    monkeypatch.setattr(os, "fsync", failing_once(os.fsync, errno.EIO))

    with pytest.raises(DeadLetterError):
        await store.write(second)
    assert only_file(tmp_path).read_bytes() == before
    await store.write(second)
    assert stored_ids(tmp_path) == ids(first + second)


async def test_a_cut_back_that_failed_is_finished_before_the_next_append(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = FileDeadLetter(tmp_path)
    first, second = batch(0, 1), batch(1, 2)
    await store.write(first)
    disk = FullDisk(tmp_path, free=50)
    monkeypatch.setattr(os, "write", disk.write)
    monkeypatch.setattr(os, "ftruncate", failing_once(os.ftruncate, errno.EIO))

    with pytest.raises(DeadLetterError):
        await store.write(second)
    assert not only_file(tmp_path).read_bytes().endswith(b"\n")  # the cut failed too

    disk.free = 1 << 20
    await store.write(second)
    assert stored_ids(tmp_path) == ids(first + second)
    assert not torn_files(tmp_path)  # restored to the size noted, not "recovered"


async def test_an_append_never_follows_a_torn_line(tmp_path: Path) -> None:
    store = FileDeadLetter(tmp_path)
    first, second = batch(0, 1), batch(1, 1)
    await store.write(first)
    fragment = second[0].to_json()[:40]  # a crash mid-write, and no recover() since
    with only_file(tmp_path).open("ab") as handle:
        handle.write(fragment)

    await store.write(second)
    assert stored_ids(tmp_path) == ids(first + second)
    assert (tmp_path / f"{only_file(tmp_path).name}.torn").read_bytes() == fragment


def test_recover_moves_torn_tails_aside_and_names_each_file(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    good = b"".join(entry.to_json() + b"\n" for entry in batch(0, 2))
    fragment = b'{"id":"abc","origin":"source","value":"SECRET-PAYL'
    torn = tmp_path / "deadletter-2026-11-24.jsonl"
    clean = tmp_path / "deadletter-2026-11-25.jsonl"
    only_torn = tmp_path / "deadletter-2026-11-26.jsonl"
    torn.write_bytes(good + fragment)
    clean.write_bytes(good)
    only_torn.write_bytes(fragment)

    with caplog.at_level(logging.ERROR, logger="pipeline.deadletter.file"):
        problems = FileDeadLetter(tmp_path).recover()

    assert len(problems) == 2
    assert torn.name in problems[0]
    assert f"offset {len(good)}" in problems[0]
    assert only_torn.name in problems[1]
    assert (torn.read_bytes(), clean.read_bytes(), only_torn.read_bytes()) == (good, good, b"")
    assert (tmp_path / f"{torn.name}.torn").read_bytes() == fragment
    assert (tmp_path / f"{only_torn.name}.torn").read_bytes() == fragment
    assert not (tmp_path / f"{clean.name}.torn").exists()
    logged = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert logged == problems
    assert "SECRET" not in caplog.text  # where it is, never what it holds
    assert FileDeadLetter(tmp_path).recover() == []  # repaired once, then nothing to do


def test_nothing_to_recover(tmp_path: Path) -> None:
    assert FileDeadLetter(tmp_path / "not-yet-created").recover() == []
    assert KafkaDeadLetter({"bootstrap_servers": "127.0.0.1:9"}, "dlq").recover() == []
