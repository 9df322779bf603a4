"""Line sources: JSON lines from stdin or a file (the embedded default, and replays).

Reading happens on a daemon thread so a blocked stdin never holds up the event loop or
process exit; batches reach the loop through a small bounded queue (back-pressure).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import io
import sys
import threading
from collections.abc import AsyncIterator
from pathlib import Path

from pipeline.model import Position, Record
from pipeline.ops.health import Status
from pipeline.sources.base import Room

READ_CHUNK = 256 * 1024
_END = None


class LineSource:
    """Each non-blank line is one record at (name, 0, line number)."""

    def __init__(self, stream: io.BufferedIOBase, name: str) -> None:
        self.name = name
        self._stream = stream
        self._queue: asyncio.Queue[list[Record] | None] = asyncio.Queue(maxsize=4)
        self._thread: threading.Thread | None = None
        self.error: str | None = None
        self.finished = False

    @classmethod
    def stdin(cls) -> LineSource:
        stream = sys.stdin.buffer
        assert isinstance(stream, io.BufferedIOBase)  # sys.stdin.buffer is a BufferedReader
        return cls(stream, "stdin")

    @classmethod
    def file(cls, path: Path) -> LineSource:
        return cls(io.BufferedReader(io.FileIO(path, "rb"), READ_CHUNK), str(path))

    async def batches(self, room: Room) -> AsyncIterator[list[Record]]:
        """Yield batches of records until end of input."""
        loop = asyncio.get_running_loop()
        if self._thread is None:
            self._thread = threading.Thread(target=self._read, args=(loop,),
                                            name=f"govpipe-read-{self.name}", daemon=True)
            self._thread.start()
        while (batch := await self._queue.get()) is not _END:
            yield batch
            if not room.available():
                room.note_pause()
                await room.wait()
        self.finished = True

    def _read(self, loop: asyncio.AbstractEventLoop) -> None:
        # read1 returns what one read gives: a trickle of lines is forwarded as it comes,
        # a large file in chunks of many lines.
        number, partial = 0, b""
        try:
            while chunk := self._stream.read1(READ_CHUNK):
                *lines, partial = (partial + chunk).split(b"\n")
                batch = []
                for line in lines:
                    number += 1
                    if line.strip():  # blank lines separate records; they are not records
                        batch.append(Record(line, Position(self.name, 0, number, kind="line")))
                if batch:
                    self._put(loop, batch)
            if partial.strip():
                self._put(loop, [Record(partial, Position(self.name, 0, number + 1, kind="line"))])
        except (OSError, ValueError) as exc:  # ValueError: the stream was closed at shutdown
            self.error = f"reading {self.name} failed: {exc}"
        finally:
            self._put(loop, _END)

    def _put(self, loop: asyncio.AbstractEventLoop, item: list[Record] | None) -> None:
        # If the loop has closed, the daemon is exiting and nothing waits for this batch.
        with contextlib.suppress(RuntimeError, concurrent.futures.CancelledError):
            asyncio.run_coroutine_threadsafe(self._queue.put(item), loop).result()

    async def commit(self) -> None:
        return None  # lines carry no position to keep: a restart reads its input again

    async def refresh_metrics(self) -> None:
        return None

    def health(self) -> tuple[Status, str]:
        if self.error:
            return Status.UNHEALTHY, self.error
        if self.finished:
            return Status.HEALTHY, f"{self.name}: end of input reached"
        return Status.HEALTHY, f"reading {self.name}"

    async def aclose(self) -> None:
        if self._stream is not sys.stdin.buffer:
            self._stream.close()
