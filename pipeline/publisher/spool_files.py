"""The spool directory's files: numbered segments, the cursor, the lock."""

from __future__ import annotations

import fcntl
import logging
import os
from pathlib import Path
from typing import NamedTuple

log = logging.getLogger(__name__)

SEGMENT_SUFFIX = ".spool"


class SpoolError(Exception):
    """The spool cannot be opened or read (in use by another process, unreadable, damaged)."""


class SpoolClosed(SpoolError):
    """An append after the spool was closed."""


class Position(NamedTuple):
    """A place in the spool: segment number and byte offset in it."""

    segment: int
    offset: int


def segment_path(directory: Path, number: int) -> Path:
    """The file of segment `number`."""
    return directory / f"{number:012d}{SEGMENT_SUFFIX}"


def segment_numbers(directory: Path) -> list[int]:
    """The segments in `directory`, oldest first."""
    names = (path.name.removesuffix(SEGMENT_SUFFIX)
             for path in directory.glob(f"*{SEGMENT_SUFFIX}"))
    return sorted(int(name) for name in names if name.isdigit())


def read_cursor(directory: Path) -> Position | None:
    """The first unacknowledged position, as last written (None: start from the oldest)."""
    try:
        segment, offset = (directory / "cursor").read_text(encoding="ascii").split()
        return Position(int(segment), int(offset))
    except FileNotFoundError:
        return None
    except (ValueError, UnicodeDecodeError):
        log.warning("spool %s: unreadable cursor; sending every spooled event again",
                    directory)
        return None


def write_cursor(directory: Path, position: Position) -> None:
    """Replace the cursor atomically (not fsynced: a cursor that points back resends)."""
    temporary = directory / "cursor.tmp"
    temporary.write_text(f"{position.segment} {position.offset}\n", encoding="ascii")
    temporary.replace(directory / "cursor")


def lock_directory(directory: Path) -> int:
    """Hold the spool's lock (the descriptor); SpoolError when another process holds it."""
    fd = os.open(directory / "lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise SpoolError(f"spool {directory}: in use by another publisher (one process "
                         "per spool directory)") from None
    return fd


def fsync_directory(directory: Path) -> None:
    """Make a new file's name durable."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
