"""Line sources: JSON lines from stdin or a file (the embedded default, and replays).

Reading happens on a daemon thread so a blocked stdin never holds up the event loop or
process exit; batches reach the loop through a small bounded queue (back-pressure).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import sys
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import BinaryIO

from pipeline.model import Position, Record

BATCH_LINES = 512
_END = None


class LineSource:
    """Each non-blank line is one record at (name, 0, line number)."""

    def __init__(self, stream: BinaryIO, name: str, batch_lines: int = BATCH_LINES) -> None:
        self.name = name
        self._stream = stream
        self._batch_lines = batch_lines
        self._queue: asyncio.Queue[list[Record] | None] = asyncio.Queue(maxsize=4)
        self._thread: threading.Thread | None = None
        self.error: str | None = None
        self.finished = False

    @classmethod
    def stdin(cls) -> LineSource:
        return cls(sys.stdin.buffer, "stdin")

    @classmethod
    def file(cls, path: Path) -> LineSource:
        return cls(path.open("rb"), str(path))

    async def batches(self) -> AsyncIterator[list[Record]]:
        """Yield batches of records until end of input."""
        loop = asyncio.get_running_loop()
        if self._thread is None:
            self._thread = threading.Thread(target=self._read, args=(loop,),
                                            name=f"govpipe-read-{self.name}", daemon=True)
            self._thread.start()
        while (batch := await self._queue.get()) is not _END:
            yield batch
        self.finished = True

    def _read(self, loop: asyncio.AbstractEventLoop) -> None:
        batch: list[Record] = []
        try:
            for number, line in enumerate(self._stream, start=1):
                if not line.strip():
                    continue  # blank lines separate records; they are not records
                value = line[:-1] if line.endswith(b"\n") else line
                batch.append(Record(value, Position(self.name, 0, number)))
                if len(batch) >= self._batch_lines:
                    self._put(loop, batch)
                    batch = []
        except (OSError, ValueError) as exc:  # ValueError: the stream was closed at shutdown
            self.error = f"reading {self.name} failed: {exc}"
        finally:
            if batch:
                self._put(loop, batch)
            self._put(loop, _END)

    def _put(self, loop: asyncio.AbstractEventLoop, item: list[Record] | None) -> None:
        try:
            asyncio.run_coroutine_threadsafe(self._queue.put(item), loop).result()
        except (RuntimeError, concurrent.futures.CancelledError):
            pass  # the loop has closed: the daemon is exiting, nothing waits for this batch

    async def aclose(self) -> None:
        if self._stream is not sys.stdin.buffer:
            self._stream.close()
