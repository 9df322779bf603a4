"""A durable, append-only local spool of events waiting for the broker's acknowledgement.

Files in the spool directory: numbered segments (`000000000000.spool`, …) of frames
(`pipeline.publisher.frames`), a `cursor` naming the first unacknowledged position, and a
`lock` held while a publisher owns the directory. Appends go to the newest segment in one
write per batch; acknowledging moves the cursor and deletes segments left behind. Opening
the spool repairs a torn tail (a frame cut short by a crash) and counts what is still
unacknowledged, which the sender then sends again. The cursor is replaced atomically but
never fsynced: after a power loss it may point back, which resends (duplicates by event id),
never skips.

Thread-safe: events are appended from the agent's threads while a sender reads and
acknowledges from its own.
"""

from __future__ import annotations

import logging
import os
import threading
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from pipeline.publisher.frames import BODY_HEAD, HEADER, SpoolEntry, decode, encode, valid_prefix
from pipeline.publisher.options import SpoolOptions
from pipeline.publisher.spool_files import (
    Position,
    SpoolClosed,
    SpoolError,
    fsync_directory,
    lock_directory,
    read_cursor,
    segment_numbers,
    segment_path,
    write_cursor,
)

__all__ = ["Position", "Spool", "SpoolCounts", "SpoolError"]

log = logging.getLogger(__name__)

_READ_CHUNK = 1024 * 1024


@dataclass(frozen=True, slots=True)
class SpoolCounts:
    """A consistent snapshot: recovered + spooled = acknowledged + Σ rejected + entries,
    always (`rejected`: entries Kafka refused for good, set aside, by reason)."""

    recovered: int
    spooled: int
    acknowledged: int
    rejected: dict[str, int]
    entries: int
    bytes: int
    oldest_spooled_at_ms: int | None


class Spool:
    """The spool in `options.directory` (see the module docstring)."""

    _sizes: dict[int, int]  # segment number → bytes of whole entries in it
    _segment: int  # the segment appends go to
    _fd: int
    _cursor: Position
    _recovered: int
    _spooled: int
    _acknowledged: int
    _rejected: Counter[str]
    _entries: int
    _bytes: int
    _oldest_ms: int | None

    def __init__(self, options: SpoolOptions, clock_ms: Callable[[], int]) -> None:
        """Open (or create) the spool and lock it; raises SpoolError when another process
        holds it or it cannot be read."""
        self._options = options
        self._clock_ms = clock_ms
        self._dir = options.directory
        self._lock = threading.Lock()
        self._closed = False
        self._damaged = False
        self._dirty = False
        try:
            self._dir.mkdir(parents=True, exist_ok=True)
            self._lock_fd = lock_directory(self._dir)
        except OSError as exc:
            raise SpoolError(f"spool {self._dir}: cannot open: {exc.strerror}") from None
        try:
            self._recover()
        except OSError as exc:
            os.close(self._lock_fd)
            raise SpoolError(f"spool {self._dir}: cannot read: {exc.strerror}") from None

    @property
    def directory(self) -> Path:
        """Where the spool lives."""
        return self._dir

    @property
    def start(self) -> Position:
        """The first unacknowledged position."""
        with self._lock:
            return self._cursor

    @property
    def end(self) -> Position:
        """The position after the last spooled entry."""
        with self._lock:
            return Position(self._segment, self._sizes[self._segment])

    def counts(self) -> SpoolCounts:
        """What the spool holds and has done, in one consistent snapshot."""
        with self._lock:
            return SpoolCounts(self._recovered, self._spooled, self._acknowledged,
                               dict(self._rejected), self._entries, self._bytes, self._oldest_ms)

    def append(self, items: Sequence[tuple[bytes, bytes]]) -> bool:
        """Spool (key, value) pairs in one write; False, with nothing written, when they do
        not fit under `max_bytes`. Raises OSError (nothing written) when the disk refuses."""
        now = self._clock_ms()
        frames = b"".join(encode(SpoolEntry(key, value, now)) for key, value in items)
        with self._lock:
            if self._closed:
                raise SpoolClosed(f"spool {self._dir}: closed")
            if self._damaged:
                raise SpoolError(f"spool {self._dir}: damaged by a failed write; restart")
            if self._bytes + len(frames) > self._options.max_bytes:
                return False
            if self._sizes[self._segment] >= self._options.segment_bytes:
                self._roll()
            self._write(frames)
            self._sizes[self._segment] += len(frames)
            self._entries += len(items)
            self._bytes += len(frames)
            self._spooled += len(items)
            if self._oldest_ms is None:
                self._oldest_ms = now
        return True

    def read(self, position: Position, max_entries: int) -> tuple[list[SpoolEntry], Position]:
        """Up to `max_entries` entries from `position` on, and the position after them."""
        with self._lock:
            position = self._skip_finished(position)
            limit = self._sizes.get(position.segment, position.offset)
        size = min(limit - position.offset, max(_READ_CHUNK, 2 * self._options.max_event_bytes))
        if size <= 0:
            return [], position
        with self._segment_path(position.segment).open("rb") as segment:
            data = os.pread(segment.fileno(), size, position.offset)
        entries: list[SpoolEntry] = []
        offset = 0
        while len(entries) < max_entries and (decoded := decode(data, offset)) is not None:
            entry, offset = decoded
            entries.append(entry)
        if not entries:
            raise SpoolError(f"spool {self._dir}: damaged entry in segment "
                             f"{position.segment} at byte {position.offset}")
        return entries, Position(position.segment, position.offset + offset)

    def acknowledge(self, position: Position, entries: Sequence[SpoolEntry],
                    rejected: Sequence[str] = ()) -> None:
        """Forget every entry before `position`: the broker acknowledged them, except those
        it refused for good (one reason each in `rejected`), which were set aside."""
        with self._lock:
            self._cursor = position
            self._entries -= len(entries)
            self._bytes -= sum(entry.size for entry in entries)
            self._acknowledged += len(entries) - len(rejected)
            self._rejected.update(rejected)
            write_cursor(self._dir, position)
            for segment in [number for number in self._sizes if number < position.segment]:
                del self._sizes[segment]
                self._segment_path(segment).unlink(missing_ok=True)
            self._oldest_ms = self._spooled_at(position) if self._entries else None

    def sync(self) -> None:
        """Flush appended entries to disk (the `interval` policy calls this). The fsync runs
        outside the lock, on a duplicate of the descriptor, so appends never wait for it."""
        with self._lock:
            if not self._dirty or self._closed:
                return
            fd = os.dup(self._fd)
            self._dirty = False
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def close(self) -> None:
        """Flush (unless the policy is `never`), close the files and unlock; callable twice."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            if self._dirty and self._options.fsync != "never":
                try:
                    os.fsync(self._fd)
                except OSError as exc:
                    log.error("spool %s: cannot flush to disk on close: %s (a crash of the "
                              "operating system now may lose the last entries)", self._dir,
                              exc.strerror)
            os.close(self._fd)
            os.close(self._lock_fd)

    # -- inside the lock -------------------------------------------------------------------

    def _write(self, frames: bytes) -> None:
        before = self._sizes[self._segment]
        view = memoryview(frames)
        try:
            while view:
                view = view[os.write(self._fd, view):]
            if self._options.fsync == "always":
                os.fsync(self._fd)
            else:
                self._dirty = True
        except OSError:
            self._undo_write(before)
            raise

    def _undo_write(self, size: int) -> None:
        """Whole entries or none: cut a failed write off; if even that fails, refuse every
        later append (a later entry after a partial one would be unreadable)."""
        try:
            os.ftruncate(self._fd, size)
        except OSError as exc:
            self._damaged = True
            log.error("spool %s: cannot remove a partly written entry (%s); refusing new "
                      "events until restart (the restart repairs the file)", self._dir,
                      exc.strerror)

    def _roll(self) -> None:
        if self._options.fsync != "never":
            os.fsync(self._fd)
        os.close(self._fd)
        self._segment += 1
        self._sizes[self._segment] = 0
        self._fd = self._open_for_append(self._segment)
        if self._options.fsync == "always":
            fsync_directory(self._dir)

    def _skip_finished(self, position: Position) -> Position:
        """Past the end of a finished segment → the start of the next one."""
        while (position.segment < self._segment
               and position.offset >= self._sizes.get(position.segment, 0)):
            position = Position(min(n for n in self._sizes if n > position.segment), 0)
        return position

    def _spooled_at(self, position: Position) -> int | None:
        position = self._skip_finished(position)
        with self._segment_path(position.segment).open("rb") as segment:
            head = os.pread(segment.fileno(), HEADER.size + BODY_HEAD.size, position.offset)
        if len(head) < HEADER.size + BODY_HEAD.size:
            return None
        return int(BODY_HEAD.unpack_from(head, HEADER.size)[0])

    # -- opening ---------------------------------------------------------------------------

    def _recover(self) -> None:
        numbers = segment_numbers(self._dir)
        cursor = read_cursor(self._dir) or Position(numbers[0] if numbers else 0, 0)
        for number in [n for n in numbers if n < cursor.segment]:
            self._segment_path(number).unlink()
        numbers = [n for n in numbers if n >= cursor.segment] or [cursor.segment]
        if cursor.segment != numbers[0]:
            cursor = Position(numbers[0], 0)
        self._sizes = {}
        self._recovered = self._entries = self._bytes = 0
        self._oldest_ms = None
        for number in numbers:
            self._recover_segment(number, cursor.offset if number == cursor.segment else 0,
                                  newest=number == numbers[-1])
        self._spooled = self._acknowledged = 0
        self._rejected = Counter()
        self._cursor = Position(cursor.segment, min(cursor.offset, self._sizes[cursor.segment]))
        self._segment = numbers[-1]
        self._fd = self._open_for_append(self._segment)
        if self._recovered:
            log.info("spool %s: %d events (%d bytes) not yet acknowledged; sending them again",
                     self._dir, self._recovered, self._bytes)

    def _recover_segment(self, number: int, start: int, *, newest: bool) -> None:
        path = self._segment_path(number)
        data = path.read_bytes() if path.exists() else b""
        start = min(start, len(data))
        valid, entries, first_ms = valid_prefix(memoryview(data)[start:])
        if start + valid < len(data):
            self._set_aside(path, data[start + valid:], newest=newest)
            with path.open("r+b") as segment:
                segment.truncate(start + valid)
        self._sizes[number] = start + valid
        self._recovered += entries
        self._entries += entries
        self._bytes += valid
        if self._oldest_ms is None:
            self._oldest_ms = first_ms

    def _set_aside(self, path: Path, rest: bytes, *, newest: bool) -> None:
        """What follows a segment's last whole entry. In the newest segment, a write a crash
        cut short (never acknowledged to the caller as a whole entry): removed. In an older
        one, damage (later entries may be in it): kept beside it, named in an error."""
        if newest:
            log.warning("spool %s: %s ends in %d bytes that are not a whole entry (cut short "
                        "by a crash while it was being written); removed",
                        self._dir, path.name, len(rest))
            return
        damaged = path.with_name(path.name + ".damaged")
        with damaged.open("ab") as kept:
            kept.write(rest)
            kept.flush()
            os.fsync(kept.fileno())
        log.error("spool %s: %s is damaged after its last whole entry: %d bytes that may "
                  "hold events were moved to %s and are NOT sent; inspect them",
                  self._dir, path.name, len(rest), damaged)

    def _segment_path(self, number: int) -> Path:
        return segment_path(self._dir, number)

    def _open_for_append(self, number: int) -> int:
        return os.open(self._segment_path(number), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)

