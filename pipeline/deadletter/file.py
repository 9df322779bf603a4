"""The file dead-letter store: JSON lines in a directory, one file per UTC day, with
`replayed.jsonl` beside them for what `govpipe replay` put back."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path

from pipeline.deadletter.entry import DeadLetterEntry, is_marker, marker
from pipeline.deadletter.lines import (
    append_on_a_new_line,
    cut_torn_tail,
    fsync_directory,
    json_lines,
    lock_exclusively,
    recover_file,
    write_all,
)
from pipeline.deadletter.private import ensure_private_folder, open_private, tighten_folder
from pipeline.deadletter.store import DeadLetterError, DeadLetterFull, StoredEntries
from pipeline.signing.signers import Signer

log = logging.getLogger(__name__)

FILE_PREFIX = "deadletter-"
MARKER_FILE = "replayed.jsonl"


class FileDeadLetter:
    """JSON lines in `directory/deadletter-YYYY-MM-DD.jsonl`, fsynced per write.

    A write is whole or not at all: a batch that fails part-way (a full disk) is cut off
    again, so the file always ends with its last complete entry and the writer's retry
    appends cleanly. An entry left inside a partial line would be unreadable, i.e. lost.
    Replay markers are appended to `directory/replayed.jsonl`, not fsynced: a lost marker
    only means its entry may be replayed again.

    More than one writer may share the directory (two processes started in one working
    directory share the default, relative path): each cut, append and cut-back holds an
    exclusive lock on the file, so none cuts away what another is writing or has written.

    The folder is 0700 and its files 0600 (`pipeline.deadletter.private`). With
    `max_bytes`, the entry files together never grow past it: a batch is written only as
    far as whole entries fit, and `write` raises `DeadLetterFull` for the rest (the
    writer holds them and the source stops reading until room is made).
    """

    def __init__(self, directory: Path, signer: Signer | None = None, *,
                 max_bytes: int | None = None,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        """`signer` signs each entry written (the daemon's; None only to read and mark)."""
        self.directory = directory
        self._signer = signer
        self.description = f"directory {directory}"
        self.max_bytes = max_bytes
        self._clock = clock
        # A failed write whose cut-back failed too: the file, the size it must get back to
        # before anything is appended (an append after a partial line would be lost), and
        # how the failed write left it (inode, size), if that could be seen.
        self._restore: tuple[Path, int, tuple[int, int] | None] | None = None

    def use_signer(self, signer: Signer) -> None:
        """Sign the entries written from now on with `signer` (a key rotation)."""
        self._signer = signer

    async def write(self, entries: Sequence[DeadLetterEntry]) -> None:
        lines = [entry.to_json(signer=self._signer) + b"\n" for entry in entries]
        try:
            written = await asyncio.to_thread(self._append, lines)
        except OSError as exc:
            raise DeadLetterError(f"cannot write to {self.directory}: {exc.strerror}") from exc
        if written < len(lines):
            raise DeadLetterFull(f"{self.directory} holds deadletter.max_bytes "
                                 f"({self.max_bytes} bytes)", written)

    def _append(self, lines: list[bytes]) -> int:
        """Append as many of `lines` as fit under the cap; how many were written."""
        self._finish_restore()
        ensure_private_folder(self.directory)
        path = self.directory / f"{FILE_PREFIX}{self._clock().astimezone(UTC):%Y-%m-%d}.jsonl"
        # Unbuffered: a buffered handle would write what it still holds when closed,
        # after the cut-back.
        fd = open_private(path, os.O_RDWR | os.O_APPEND)
        try:
            lock_exclusively(fd)  # released by the close
            # A crash mid-write with no recover() since: never append after a partial line.
            _logged(cut_torn_tail(fd, path))
            size = os.fstat(fd).st_size
            count = self._fitting(lines, size, path)
            if count == 0:
                return 0
            try:
                write_all(fd, b"".join(lines[:count]))
                os.fsync(fd)
                if size == 0:  # maybe a new file: its name must survive a power cut too
                    fsync_directory(self.directory)
            except OSError:
                self._cut_back(fd, path, size)
                raise
        finally:
            os.close(fd)
        return count

    def _fitting(self, lines: list[bytes], size: int, path: Path) -> int:
        """How many of `lines` fit under the cap, today's file being `size` bytes (taken
        under its lock, so other writers in the folder are counted exactly)."""
        if self.max_bytes is None:
            return len(lines)
        room = self.max_bytes - size - sum(
            _size(other) for other in self._entry_files() if other != path)
        count = 0
        for line in lines:
            room -= len(line)
            if room < 0:
                break
            count += 1
        return count

    def _cut_back(self, fd: int, path: Path, size: int) -> None:
        """Take the failed batch out again (all of it: part may be on disk). Called with
        the file locked since `size` was taken: nobody else appended after it."""
        try:
            os.ftruncate(fd, size)
            os.fsync(fd)
        except OSError as exc:
            self._restore = (path, size, _identity(fd))
            log.error("cannot cut %s back to %d bytes after a failed write (%s); "
                      "will do so before the next write", path, size, exc.strerror)

    def _finish_restore(self) -> None:
        """The cut-back a failed write could not make; raises OSError while it still fails."""
        if self._restore is None:
            return
        path, size, left = self._restore
        try:
            fd = os.open(path, os.O_WRONLY)
        except FileNotFoundError:
            self._restore = None  # removed meanwhile: nothing left to cut
            return
        try:
            lock_exclusively(fd)
            now = os.fstat(fd)
            if left is None or (now.st_ino, now.st_size) != left:
                # Another writer has been at the file since (or how the failed write left
                # it is unknown): what follows `size` may be its entries, written and
                # settled. Never cut those; the next append cuts a torn tail, and whole
                # entries of the failed batch are only duplicates of its retry.
                self._restore = None
                log.warning("not cutting %s back to %d bytes: changed since the failed "
                            "write", path, size)
                return
            if now.st_size > size:  # never grow it: that would pad with zero bytes
                os.ftruncate(fd, size)
                os.fsync(fd)
        finally:
            os.close(fd)
        self._restore = None
        log.warning("cut %s back to %d bytes, its last complete entry", path, size)

    def recover(self) -> list[str]:
        """Make the folder and its files private again (`tighten_folder`), then cut torn
        last lines (a crash mid-write) off the dead-letter files; one description per file
        that had one, each also logged at ERROR."""
        try:
            tighten_folder(self.directory)
        except OSError as exc:  # the write that follows reports it, and is retried
            log.error("cannot check the modes in %s: %s", self.directory, exc.strerror)
        found = (_logged(recover_file(path)) for path in self._entry_files())
        return [problem for problem in found if problem is not None]

    def check(self) -> str | None:
        """None when entries can be written, else why not."""
        probe = self.directory if self.directory.exists() else self.directory.parent
        return None if os.access(probe, os.W_OK) else f"{probe} is not writable"

    async def read(self) -> StoredEntries:
        return await asyncio.to_thread(self._read)

    def _read(self) -> StoredEntries:
        stored = StoredEntries()
        for path in self._entry_files():
            stored.entries.extend(json_lines(path, stored.problems))
        markers = self.directory / MARKER_FILE
        if markers.exists():
            stored.replayed = {str(value["replayed"])
                               for value in json_lines(markers, stored.marker_problems)
                               if is_marker(value)}
        return stored

    async def mark_replayed(self, entry_ids: Sequence[str]) -> None:
        lines = b"".join(marker(entry_id) + b"\n" for entry_id in entry_ids)
        if lines:
            await asyncio.to_thread(append_on_a_new_line, self.directory / MARKER_FILE, lines)

    def _entry_files(self) -> list[Path]:
        if not self.directory.is_dir():
            return []
        return sorted(self.directory.glob(f"{FILE_PREFIX}*.jsonl"))

    async def aclose(self) -> None:
        return None


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:  # removed meanwhile (archived after a replay): no bytes
        return 0


def _identity(fd: int) -> tuple[int, int] | None:
    """The file's inode and size; None when they cannot be seen."""
    try:
        stat = os.fstat(fd)
    except OSError:
        return None
    return stat.st_ino, stat.st_size


def _logged(problem: str | None) -> str | None:
    if problem is not None:
        log.error("%s", problem)
    return problem
