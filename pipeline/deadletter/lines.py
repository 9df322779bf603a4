"""JSON-lines files as the file dead-letter keeps them: written a whole line at a time,
repaired after a crash left a torn last line, and read without passing over any line
silently. Nothing here logs; the caller reports the problems these functions return."""

from __future__ import annotations

import errno
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson

from pipeline.deadletter.private import open_private
from pipeline.deadletter.store import ReadProblem


def lock_exclusively(fd: int) -> None:
    """Wait for, then take, the exclusive lock on `fd`'s file; closing `fd` releases it.

    Every writer of a dead-letter file takes it around what it cuts and appends: another
    process writing to the same directory must never see (and cut as torn) a line being
    written, nor have entries it wrote cut away by a cut-back to a size taken before them.
    """
    fcntl.flock(fd, fcntl.LOCK_EX)


def write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        if written == 0:  # not expected from a regular file; never loop forever on it
            raise OSError(errno.EIO, "write made no progress")
        view = view[written:]


def fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def recover_file(path: Path) -> str | None:
    """`cut_torn_tail` on the file at `path`; a failure to check it is a problem too."""
    try:
        fd = os.open(path, os.O_RDWR)
        try:
            lock_exclusively(fd)  # a write under way elsewhere is not a torn line
            return cut_torn_tail(fd, path)
        finally:
            os.close(fd)
    except OSError as exc:
        return f"{path}: cannot check for a torn last line: {exc.strerror}"


def cut_torn_tail(fd: int, path: Path) -> str | None:
    """Move a last line that lacks its newline to `<name>.torn` and cut the file back to
    its last complete line; the problem, or None when the file ends whole.

    A torn entry was never acknowledged: its record's source offset was not committed, so
    the record is redelivered and dead-lettered again. The fragment is kept for inspection
    only. The problem says where it was, never what it holds (it may be the rejected record).
    """
    size = os.fstat(fd).st_size
    end = _complete_end(fd, size)
    if end == size:
        return None
    sidecar = path.with_name(f"{path.name}.torn")
    # Fragment kept first, then cut: a crash in between leaves it twice, never nowhere.
    _append_durably(sidecar, os.pread(fd, size - end, end))
    os.ftruncate(fd, end)
    os.fsync(fd)
    return (f"{path}: torn last line, probably a crash mid-write: {size - end} bytes at "
            f"byte offset {end} moved to {sidecar.name}; the file now ends with its last "
            "complete entry (the record was not acknowledged and is dead-lettered again)")


def _complete_end(fd: int, size: int) -> int:
    """The offset just after the last newline in the file (0 when it has none)."""
    chunk = 65_536
    stop = size
    while stop > 0:
        start = max(0, stop - chunk)
        newline = os.pread(fd, stop - start, start).rfind(b"\n")
        if newline >= 0:
            return start + newline + 1
        stop = start
    return 0


def _append_durably(path: Path, data: bytes) -> None:
    fd = open_private(path, os.O_WRONLY | os.O_APPEND)
    try:
        write_all(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    fsync_directory(path.parent)


def append_on_a_new_line(path: Path, lines: bytes) -> None:
    """Append `lines`; after a last line torn by a crash, on a line of their own (appended
    to the torn one, the first would be unreadable too)."""
    with os.fdopen(open_private(path, os.O_RDWR | os.O_APPEND), "a+b") as handle:
        lock_exclusively(handle.fileno())  # another replay's markers go on lines of their own
        end = handle.seek(0, os.SEEK_END)
        if end > 0:
            handle.seek(end - 1)
            if handle.read(1) != b"\n":
                lines = b"\n" + lines
        handle.write(lines)


def json_lines(path: Path, problems: list[ReadProblem]) -> Iterator[dict[str, Any]]:
    """The JSON objects in `path`, one a line; every other line goes to `problems`."""
    with path.open("rb") as handle:
        for number, line in enumerate(handle, start=1):
            value = _object(line)
            if value is None:
                value = _salvage(line)
                problems.append(_problem(path, number, line, salvaged=value is not None))
            if value is not None:
                yield value


def _object(line: bytes) -> dict[str, Any] | None:
    try:
        value = orjson.loads(line)
    except orjson.JSONDecodeError:
        return None
    return value if isinstance(value, dict) else None


def _salvage(line: bytes) -> dict[str, Any] | None:
    """The whole entry at the end of a line an older dead-letter writer left as `<partial
    entry><complete entry>`: a write cut short, then the whole batch written again after
    it. The retry held the cut entry too, so reading the entry at the end loses nothing."""
    start = line.rfind(b'{"id":"', 1)
    value = _object(line[start:]) if start > 0 else None
    return value if value is not None and "origin" in value else None


def _problem(path: Path, number: int, line: bytes, *, salvaged: bool) -> ReadProblem:
    what = ("torn last line, probably a crash mid-write" if not line.endswith(b"\n")
            else "not a JSON object")
    if salvaged:
        what += "; salvaged the complete entry at its end"
    else:
        what += "; skipped"
    return ReadProblem(f"{path}:{number}", what, salvaged)
