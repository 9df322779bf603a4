"""Two file dead-letter writers on one directory (two processes started in one working
directory share the default, relative path): neither cuts away what the other wrote, so
every entry of both is there, once, on a line of its own."""

from __future__ import annotations

import asyncio
import errno
import os
import threading
from contextvars import ContextVar
from pathlib import Path

import orjson
import pytest

from pipeline.deadletter.entry import DeadLetterEntry
from pipeline.deadletter.file import FileDeadLetter
from pipeline.deadletter.store import DeadLetterError
from pipeline.model import Position

# Which store the calling code writes for: `asyncio.to_thread` carries it to the thread.
who: ContextVar[str] = ContextVar("who", default="")


def batch(topic: str, first: int, count: int, size: int = 100) -> list[DeadLetterEntry]:
    return [DeadLetterEntry(origin="source", reason="invalid_json", error="not JSON",
                            position=Position(topic, 0, offset), value=b"v" * size)
            for offset in range(first, first + count)]


def ids(entries: list[DeadLetterEntry]) -> list[str]:
    return sorted(entry.entry_id for entry in entries)


def stored_ids(directory: Path) -> list[str]:
    """Every id in the directory's entry files, sorted, after checking each file ends with a
    complete line and every line is a JSON object."""
    found: list[str] = []
    for path in directory.glob("deadletter-*.jsonl"):
        content = path.read_bytes()
        assert content.endswith(b"\n")
        found.extend(orjson.loads(line)["id"] for line in content.splitlines())
    return sorted(found)


async def test_a_cut_back_never_takes_out_what_another_writer_wrote(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Was: a's failed write was cut back to the size a took before writing, and b had
    # appended (and fsynced, so settled) its entries in between: they were cut away too.
    a, b = FileDeadLetter(tmp_path), FileDeadLetter(tmp_path)
    first, a_batch, b_batch = batch("a", 0, 2), batch("a", 2, 3), batch("b", 0, 3)
    await a.write(first)
    a_syncing, b_done = threading.Event(), threading.Event()
    real_fsync, failed = os.fsync, list[int]()

    def fsync(fd: int) -> None:
        if who.get() == "a" and not failed:
            failed.append(fd)
            a_syncing.set()
            b_done.wait(timeout=1.0)  # b writes now, unless it must wait for a's lock
            raise OSError(errno.EIO, os.strerror(errno.EIO))
        real_fsync(fd)
    monkeypatch.setattr(os, "fsync", fsync)

    async def write_a() -> None:
        who.set("a")
        with pytest.raises(DeadLetterError):
            await a.write(a_batch)
        await a.write(a_batch)  # the writer's retry

    async def write_b() -> None:
        who.set("b")
        await asyncio.to_thread(a_syncing.wait, 10)
        await b.write(b_batch)  # returned: durable, so its records are settled
        b_done.set()

    await asyncio.wait_for(asyncio.gather(write_a(), write_b()), 30)
    assert stored_ids(tmp_path) == ids(first + a_batch + b_batch)


async def test_a_late_cut_back_never_takes_out_what_another_writer_wrote(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Was: a's cut-back failed, so a cut the file back to the noted size before its next
    # write, by then past b's entries, written and settled meanwhile.
    a, b = FileDeadLetter(tmp_path), FileDeadLetter(tmp_path)
    first, a_batch, b_batch = batch("a", 0, 2), batch("a", 2, 3), batch("b", 0, 3)
    await a.write(first)
    real_write, real_ftruncate = os.write, os.ftruncate
    broken, room = [True], [50]  # a's disk: 50 bytes of room, then full

    def write(fd: int, data: bytes | memoryview) -> int:
        if who.get() != "a" or not broken:
            return real_write(fd, data)
        if not room[0]:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        written = real_write(fd, bytes(memoryview(data)[:room[0]]))
        room[0] -= written
        return written

    def ftruncate(fd: int, length: int) -> None:
        if who.get() == "a" and broken:
            raise OSError(errno.EIO, os.strerror(errno.EIO))
        real_ftruncate(fd, length)
    monkeypatch.setattr(os, "write", write)
    monkeypatch.setattr(os, "ftruncate", ftruncate)

    async def write_a() -> None:
        who.set("a")
        with pytest.raises(DeadLetterError):
            await a.write(a_batch)  # half an entry written, and it cannot be cut back
        broken.clear()

    await write_a()
    await b.write(b_batch)  # cuts a's torn line off first, then appends: settled
    who.set("a")
    await a.write(a_batch)  # the writer's retry
    assert stored_ids(tmp_path) == ids(first + a_batch + b_batch)


def test_two_writers_at_once_keep_every_entry(tmp_path: Path) -> None:
    # Two stores, each on a thread of its own, writing batches of many pages at once. Was: a
    # write under way elsewhere was taken for a torn line and cut. A race: without the lock
    # this catches it in most runs, not in every one.
    batches = {name: [batch(name, 50 * n, 50, size=2_000) for n in range(200)]
               for name in ("a", "b")}
    errors: list[BaseException] = []

    def write_all(name: str) -> None:
        store = FileDeadLetter(tmp_path)
        try:
            for entries in batches[name]:
                asyncio.run(store.write(entries))
        except BaseException as exc:  # reported by the test, not lost on the thread
            errors.append(exc)

    threads = [threading.Thread(target=write_all, args=(name,)) for name in batches]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert errors == []
    expected = [entry for entries in batches.values() for group in entries for entry in group]
    assert stored_ids(tmp_path) == ids(expected)
