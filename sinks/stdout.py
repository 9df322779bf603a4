"""Writes one signed CloudEvent per line to standard output, flushed per batch."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import queue
import sys
import threading
from collections.abc import Callable, Sequence
from typing import BinaryIO, cast

from pipeline.model import SignedEvent
from sinks.base import SinkError, closed_error

# One write for the writer thread: the work, and where to hand back how it went.
_Job = tuple[Callable[[], None], asyncio.AbstractEventLoop, asyncio.Future[None]]


class StdoutSink:
    """JSON lines on a binary stream (stdout unless one is given).

    Writes run on a daemon thread of the sink's own, one at a time in the order sent: a
    reader that stops reading blocks that thread only, never the event loop, and never the
    exit (the default executor, which `asyncio.run` joins without a time limit, is not used).
    """

    def __init__(self, stream: BinaryIO | None = None, name: str = "stdout") -> None:
        self.name = name
        self._stream = stream if stream is not None else _stdout_file()
        self._closed = False
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        # The rest of a line a failed write left torn on the stream; the writer thread
        # writes it before anything else, so no later line is glued onto the torn one.
        self._torn = b""

    async def send(self, batch: Sequence[SignedEvent]) -> None:
        if self._closed:
            raise closed_error("stdout")
        if not batch:
            return
        payload = b"".join(event.body + b"\n" for event in batch)
        await self._on_writer(lambda: self._write(payload))

    async def _on_writer(self, work: Callable[[], None]) -> None:
        """Run `work` on the writer thread and wait for it. Cancelling the wait does not
        stop a write under way (nothing can); the next job waits behind it."""
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()
        if self._thread is None:
            self._thread = threading.Thread(target=self._serve, name=f"govpipe-write-{self.name}",
                                            daemon=True)
            self._thread.start()
        self._jobs.put((work, loop, done))
        await done

    def _serve(self) -> None:
        while (job := self._jobs.get()) is not None:
            work, loop, done = job
            error: Exception | None = None
            try:
                work()
            except Exception as exc:  # handed to the task that waits for this job
                error = exc
            # The loop is closed when nobody waits any more (the run ended meanwhile).
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(_resolve, done, error)

    def _write(self, payload: bytes) -> None:
        try:
            if self._torn:
                self._write_all(self._torn)
                self._torn = b""
            self._write_all(payload)
            self._stream.flush()
        except BrokenPipeError as exc:
            raise SinkError("stdout closed by the reader", retriable=False,
                            reason="broken_pipe") from exc
        except OSError as exc:
            raise SinkError(f"stdout write failed: {exc.strerror}", retriable=True,
                            reason="io_error") from exc

    def _write_all(self, data: bytes) -> None:
        # Stdout is written raw (see `_stdout_file`): a write blocked on a full pipe comes
        # back short when the process is stopped and continued. What it did not take would
        # be lost while the batch counts as delivered.
        view = memoryview(data)
        try:
            while view:
                written = self._stream.write(view)
                if not written:  # None: a non-blocking stream that took nothing; 0: no progress
                    raise OSError(errno.EAGAIN, "stdout took nothing")
                view = view[written:]
        except Exception as exc:
            # A buffered stream says how much of a write it took before it would block.
            view = view[getattr(exc, "characters_written", 0):]
            self._keep_torn_line(data, len(data) - len(view))
            raise

    def _keep_torn_line(self, data: bytes, done: int) -> None:
        """After `done` bytes of `data` (whole lines, or the end of a torn one) went out:
        keep the rest of the line they end inside. The retried batch is written again after
        it, whole: its events that did go out come twice, which readers dedupe on id."""
        if done == 0:
            return  # nothing went out: the stream is as it was (`_torn` still holds)
        if data[done - 1] == ord(b"\n"):
            self._torn = b""
        else:
            self._torn = data[done:data.index(b"\n", done) + 1]

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        # The reader left, the device is full or the stream is already closed: whatever is
        # still buffered belongs to a batch whose send already failed (and was reported).
        try:
            with contextlib.suppress(OSError, ValueError):
                await self._on_writer(self._stream.flush)
        finally:
            self._jobs.put(None)  # the writer thread ends once what is queued is written


def _resolve(done: asyncio.Future[None], error: Exception | None) -> None:
    if done.done():  # the send was cancelled meanwhile
        return
    if error is None:
        done.set_result(None)
    else:
        done.set_exception(error)


def _stdout_file() -> BinaryIO:
    """Standard output without Python's buffer over it: the writer thread, blocked on a
    stalled reader, must hold no lock that the exit needs. The interpreter flushes
    sys.stdout on its way out; with the buffer's lock held by a blocked write it hangs there
    or aborts ("could not acquire lock ... at interpreter shutdown")."""
    sys.stdout.flush()  # whatever went through the buffer comes first
    buffer = sys.stdout.buffer
    # No `raw` when stdout is unbuffered already (PYTHONUNBUFFERED, python -u).
    return cast(BinaryIO, getattr(buffer, "raw", buffer))
