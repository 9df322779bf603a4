"""The file dead-letter on a real, full file system (a small tmpfs): a write that fails
part-way leaves no partial line, and once there is space the retry appends whole entries.

Mounting needs root. In CI (CI=true) a failed mount fails the test: skipped, it would look
green while proving nothing. Elsewhere it is skipped with the reason.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from pipeline.deadletter.entry import DeadLetterEntry
from pipeline.deadletter.file import FileDeadLetter
from pipeline.deadletter.store import DeadLetterError
from pipeline.model import Position

FREE_BYTES = 16 * 1024
ENTRY_VALUE = b"x" * 2000  # ~2 KiB per entry once written as JSON
BATCH = 3  # ~6 KiB per write: a write runs out of space part-way through a batch


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 1 MiB tmpfs mounted in the test's temp dir, unmounted afterwards."""
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)],
                          capture_output=True, text=True, check=False)
    if done.returncode != 0:
        reason = f"cannot mount a tmpfs (needs root): {done.stderr.strip()}"
        if os.environ.get("CI") == "true":
            pytest.fail(reason, pytrace=False)
        pytest.skip(reason)
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=True)


def fill(mount: Path, leave: int) -> Path:
    """A filler file that leaves about `leave` bytes free."""
    stats = os.statvfs(mount)
    filler = mount / "filler"
    filler.write_bytes(b"\0" * (stats.f_bavail * stats.f_frsize - leave))
    return filler


def entries(first: int) -> list[DeadLetterEntry]:
    return [DeadLetterEntry(origin="source", reason="too_large", error="big",
                            position=Position("events", 0, offset), value=ENTRY_VALUE)
            for offset in range(first, first + BATCH)]


def stored_ids(directory: Path) -> list[str]:
    """Every id in the dead-letter file, after checking each line is a whole JSON object."""
    [path] = directory.glob("deadletter-*.jsonl")
    content = path.read_bytes()
    assert content.endswith(b"\n"), "the file ends with a partial line"
    return [orjson.loads(line)["id"] for line in content.splitlines()]


async def write_until_full(store: FileDeadLetter) -> tuple[list[str], list[DeadLetterEntry]]:
    """Ids of the batches written before the disk filled up, and the batch that failed."""
    written: list[str] = []
    for first in range(0, 300, BATCH):
        batch = entries(first)
        try:
            await store.write(batch)
        except DeadLetterError:
            return written, batch
        written += [entry.entry_id for entry in batch]
    pytest.fail("the dead-letter never ran out of space")


async def test_a_full_disk_never_leaves_a_partial_entry(small_disk: Path) -> None:
    directory = small_disk / "deadletter"
    directory.mkdir()
    filler = fill(small_disk, FREE_BYTES)
    store = FileDeadLetter(directory)

    written, failed = await write_until_full(store)
    assert written, "not even one batch fitted"
    assert stored_ids(directory) == written
    with pytest.raises(DeadLetterError):  # the writer's retry while still full
        await store.write(failed)
    assert stored_ids(directory) == written

    filler.unlink()
    await store.write(failed)
    await store.write(entries(1000))
    expected = written + [e.entry_id for e in failed] + [e.entry_id for e in entries(1000)]
    assert stored_ids(directory) == expected  # each entry exactly once
