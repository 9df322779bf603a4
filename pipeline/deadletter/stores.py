"""Dead-letter destinations and the writer that feeds them.

An entry is written for every rejected record (origin "source") and every event a sink gave
up on (origin = the sink). The record's position is settled only once its entry is durably
written: a failed write holds the offset and is retried, never dropped.
"""

from __future__ import annotations

import asyncio
import base64
import errno
import hashlib
import logging
import os
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from pipeline.cloudevents.codec import encode
from pipeline.model import Position
from pipeline.ops.metrics import Metrics

log = logging.getLogger(__name__)

FILE_PREFIX = "deadletter-"


class DeadLetterError(Exception):
    """A dead-letter write failed; the entries are still pending."""


@dataclass(frozen=True, slots=True)
class DeadLetterEntry:
    """What went wrong with which record: enough to inspect it and to replay it."""

    origin: str
    reason: str
    error: str
    position: Position
    value: bytes | None = None
    event: Mapping[str, Any] | None = None
    key: bytes | None = None
    headers: tuple[tuple[str, bytes], ...] = ()
    sink: str | None = None
    time: str = field(default_factory=lambda: datetime.now(UTC).isoformat())

    @property
    def entry_id(self) -> str:
        """Stable across restarts: the same record failing the same way has the same id,
        so `govpipe replay` puts it back once."""
        what = str(self.event.get("id")) if self.event is not None else hashlib.sha256(
            self.value or b"").hexdigest()
        p = self.position
        text = f"{self.origin}|{p.topic}|{p.partition}|{p.offset}|{what}"
        return hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]

    def to_json(self, max_bytes: int | None = None) -> bytes:
        """The entry as JSON; over `max_bytes`, a summary that identifies the record instead
        (its position, size and SHA-256) without carrying its value, event, key or headers."""
        full = encode(self._fields(full=True))
        if max_bytes is None or len(full) <= max_bytes:
            return full
        summary = self._fields(full=False)
        summary["truncated"] = True
        summary["entry_bytes"] = len(full)
        if self.value is not None:
            summary["value_bytes"] = len(self.value)
            summary["value_sha256"] = hashlib.sha256(self.value).hexdigest()
        if self.event is not None:
            summary["event_id"] = self.event.get("id")
        return encode(summary)

    def _fields(self, *, full: bool) -> dict[str, Any]:
        entry: dict[str, Any] = {
            "id": self.entry_id, "time": self.time, "origin": self.origin, "sink": self.sink,
            "reason": self.reason, "error": self.error, "source": self.position.as_dict(),
        }
        if not full:
            return entry
        if self.event is not None:
            entry["event"] = self.event
        if self.value is not None:
            entry.update(_bytes_field("value", self.value))
        if self.key is not None:
            entry.update(_bytes_field("key", self.key))
        if self.headers:
            entry["headers"] = [[name, _b64(value)] for name, value in self.headers]
        return entry


def _b64(value: bytes) -> str:
    return base64.b64encode(value).decode("ascii")


def _bytes_field(name: str, value: bytes) -> dict[str, str]:
    """Text when the bytes are UTF-8 (readable), else base64 under `<name>_b64`."""
    try:
        return {name: value.decode("utf-8")}
    except UnicodeDecodeError:
        return {f"{name}_b64": _b64(value)}


class DeadLetterDestination(Protocol):
    """Where entries go; `write` returns only when they are durable."""

    description: str

    async def write(self, entries: Sequence[DeadLetterEntry]) -> None: ...

    def check(self) -> str | None:
        """None when entries can be written, else why not."""
        ...

    def recover(self) -> list[str]:
        """Repair what a crash left half-written (once, at start-up, before any write):
        one description per problem found, each also logged at ERROR."""
        ...

    async def aclose(self) -> None: ...


class FileDeadLetter:
    """JSON lines in `directory/deadletter-YYYY-MM-DD.jsonl`, fsynced per write.

    A write is whole or not at all: a batch that fails part-way (a full disk) is cut off
    again, so the file always ends with its last complete entry and the writer's retry
    appends cleanly. An entry left inside a partial line would be unreadable, i.e. lost.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.description = f"directory {directory}"
        # A failed write whose cut-back failed too: the file and the size it must get back
        # to before anything is appended (an append after a partial line would be lost).
        self._restore: tuple[Path, int] | None = None

    async def write(self, entries: Sequence[DeadLetterEntry]) -> None:
        payload = b"".join(entry.to_json() + b"\n" for entry in entries)
        try:
            await asyncio.to_thread(self._append, payload)
        except OSError as exc:
            raise DeadLetterError(f"cannot write to {self.directory}: {exc.strerror}") from exc

    def _append(self, payload: bytes) -> None:
        self._finish_restore()
        self.directory.mkdir(parents=True, exist_ok=True)
        path = self.directory / f"{FILE_PREFIX}{datetime.now(UTC):%Y-%m-%d}.jsonl"
        # Unbuffered: a buffered handle would write what it still holds when closed,
        # after the cut-back. Mode 0o666 (less the umask) is what open() gives a new file.
        fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o666)
        try:
            # A crash mid-write with no recover() since: never append after a partial line.
            _cut_torn_tail(fd, path)
            size = os.fstat(fd).st_size
            try:
                _write_all(fd, payload)
                os.fsync(fd)
                if size == 0:  # maybe a new file: its name must survive a power cut too
                    _fsync_directory(self.directory)
            except OSError:
                self._cut_back(fd, path, size)
                raise
        finally:
            os.close(fd)

    def _cut_back(self, fd: int, path: Path, size: int) -> None:
        """Take the failed batch out again (all of it: part may be on disk)."""
        try:
            os.ftruncate(fd, size)
            os.fsync(fd)
        except OSError as exc:
            self._restore = (path, size)
            log.error("cannot cut %s back to %d bytes after a failed write (%s); "
                      "will do so before the next write", path, size, exc.strerror)

    def _finish_restore(self) -> None:
        """The cut-back a failed write could not make; raises OSError while it still fails."""
        if self._restore is None:
            return
        path, size = self._restore
        try:
            fd = os.open(path, os.O_WRONLY)
        except FileNotFoundError:
            self._restore = None  # removed meanwhile: nothing left to cut
            return
        try:
            if os.fstat(fd).st_size > size:  # never grow it: that would pad with zero bytes
                os.ftruncate(fd, size)
                os.fsync(fd)
        finally:
            os.close(fd)
        self._restore = None
        log.warning("cut %s back to %d bytes, its last complete entry", path, size)

    def recover(self) -> list[str]:
        """Cut torn last lines (a crash mid-write) off the dead-letter files; one
        description per file that had one, each also logged at ERROR."""
        if not self.directory.is_dir():
            return []
        found = (_recover_file(path)
                 for path in sorted(self.directory.glob(f"{FILE_PREFIX}*.jsonl")))
        return [problem for problem in found if problem is not None]

    def check(self) -> str | None:
        """None when entries can be written, else why not."""
        probe = self.directory if self.directory.exists() else self.directory.parent
        return None if os.access(probe, os.W_OK) else f"{probe} is not writable"

    async def aclose(self) -> None:
        return None


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        if written == 0:  # not expected from a regular file; never loop forever on it
            raise OSError(errno.EIO, "write made no progress")
        view = view[written:]


def _fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _recover_file(path: Path) -> str | None:
    try:
        fd = os.open(path, os.O_RDWR)
        try:
            return _cut_torn_tail(fd, path)
        finally:
            os.close(fd)
    except OSError as exc:
        problem = f"{path}: cannot check for a torn last line: {exc.strerror}"
        log.error("%s", problem)
        return problem


def _cut_torn_tail(fd: int, path: Path) -> str | None:
    """Move a last line that lacks its newline to `<name>.torn` and cut the file back to
    its last complete line; the problem, logged, or None when the file ends whole.

    A torn entry was never acknowledged: its record's source offset was not committed, so
    the record is redelivered and dead-lettered again. The fragment is kept for inspection
    only. Where it was is logged, never what it holds (it may be the rejected record).
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
    problem = (f"{path}: torn last line, probably a crash mid-write: {size - end} bytes at "
               f"byte offset {end} moved to {sidecar.name}; the file now ends with its last "
               "complete entry (the record was not acknowledged and is dead-lettered again)")
    log.error("%s", problem)
    return problem


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
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
    try:
        _write_all(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    _fsync_directory(path.parent)


class KafkaDeadLetter:
    """Entries as JSON records on a Kafka topic, acknowledged by all in-sync replicas.

    An entry bigger than one record may be (a `too_large` rejection always is: its value is
    over max_event_bytes) is written as a summary (`DeadLetterEntry.to_json`); the original
    stays at the recorded source position. Written whole, it would fail forever and hold
    every later entry and offset behind it.
    """

    # Under the producer's max_request_size and the topics' max.message.bytes defaults
    # (1 MiB), with room for the key and record overhead.
    MAX_ENTRY_BYTES = 1_000_000

    def __init__(self, bootstrap_servers: str, topic: str) -> None:
        self._bootstrap = bootstrap_servers
        self._topic = topic
        self.description = f"kafka topic {topic}"
        self._producer: AIOKafkaProducer | None = None
        self._last_error: str | None = None

    async def _started(self) -> AIOKafkaProducer:
        if self._producer is None:
            producer = AIOKafkaProducer(bootstrap_servers=self._bootstrap, acks="all",
                                        enable_idempotence=True)
            try:
                await producer.start()
            except BaseException:
                await producer.stop()
                raise
            self._producer = producer
        return self._producer

    async def write(self, entries: Sequence[DeadLetterEntry]) -> None:
        try:
            producer = await self._started()
            futures = [await producer.send(self._topic, entry.to_json(self.MAX_ENTRY_BYTES),
                                           key=_bounded_key(entry.key))
                       for entry in entries]
            await asyncio.gather(*futures)
        except KafkaError as exc:
            self._last_error = f"{type(exc).__name__}: {exc}"
            raise DeadLetterError(f"cannot write to {self.description}: "
                                  f"{self._last_error}") from exc
        self._last_error = None

    def check(self) -> str | None:
        return self._last_error

    def recover(self) -> list[str]:
        return []

    async def aclose(self) -> None:
        producer, self._producer = self._producer, None
        if producer is not None:
            await producer.stop()


def _bounded_key(key: bytes | None) -> bytes | None:
    # A key too big for a record goes too; the entry's source position identifies it.
    return key if key is None or len(key) <= 16_384 else None


@dataclass(slots=True)
class _Pending:
    entry: DeadLetterEntry
    on_written: Callable[[], None]


class DeadLetterWriter:
    """Batches entries to a destination, retrying failed writes until they succeed.

    `submit` never blocks; `run` is the background task; `close` lets it finish what is
    pending. The backlog is bounded by back-pressure, as sink queues are: past
    `max_pending` entries `has_room` is false and the source stops reading (entries from
    events already in the sinks' queues still come; the bound is that much soft).
    """

    def __init__(self, destination: DeadLetterDestination, metrics: Metrics,
                 retry_backoff_s: float = 1.0, max_pending: int = 10_000) -> None:
        self._destination = destination
        self._metrics = metrics
        self._backoff_s = retry_backoff_s
        self._max_pending = max_pending
        self._pending: list[_Pending] = []
        self._wake = asyncio.Event()
        self._room = asyncio.Event()
        self._room.set()
        self._closing = False
        self.last_error: str | None = None

    @property
    def pending(self) -> int:
        return len(self._pending)

    def has_room(self) -> bool:
        return len(self._pending) < self._max_pending

    async def wait_for_room(self) -> None:
        await self._room.wait()

    def submit(self, entry: DeadLetterEntry, on_written: Callable[[], None]) -> None:
        self._pending.append(_Pending(entry, on_written))
        self._changed()
        self._wake.set()

    def _changed(self) -> None:
        self._metrics.deadletter_pending.set(len(self._pending))
        if self.has_room():
            self._room.set()
        else:
            self._room.clear()

    def close(self) -> None:
        self._closing = True
        self._wake.set()

    async def run(self) -> None:
        while True:
            if not self._pending:
                if self._closing:
                    return
                self._wake.clear()
                await self._wake.wait()
                continue
            batch = self._pending[:1000]
            if await self._write(batch):
                del self._pending[: len(batch)]
                self._changed()
                for item in batch:
                    self._metrics.deadletter_written.labels(item.entry.origin).inc()
                    item.on_written()
            else:
                await asyncio.sleep(self._backoff_s)  # a retry wait; cancelled at shutdown

    async def _write(self, batch: list[_Pending]) -> bool:
        try:
            await self._destination.write([item.entry for item in batch])
        except DeadLetterError as exc:
            self._metrics.deadletter_errors.inc()
            self.last_error = str(exc)
            log.error("dead-letter write failed, holding %d entries: %s", len(batch), exc)
            return False
        self.last_error = None
        reasons = Counter(f"{item.entry.origin}/{item.entry.reason}" for item in batch)
        log.warning("dead-lettered %d entries", len(batch),
                    extra={"fields": {"by_reason": dict(reasons)}})
        return True
