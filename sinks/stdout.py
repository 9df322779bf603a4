"""Writes one signed CloudEvent per line to standard output, flushed per batch."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import sys
from collections.abc import Sequence
from typing import BinaryIO

from pipeline.model import SignedEvent
from sinks.base import SinkError, closed_error


class StdoutSink:
    """JSON lines on a binary stream (stdout unless one is given)."""

    def __init__(self, stream: BinaryIO | None = None, name: str = "stdout") -> None:
        self.name = name
        self._stream = stream if stream is not None else sys.stdout.buffer
        self._closed = False

    async def send(self, batch: Sequence[SignedEvent]) -> None:
        if self._closed:
            raise closed_error("stdout")
        if not batch:
            return
        payload = b"".join(event.body + b"\n" for event in batch)
        # A slow reader on the other end of a pipe must not block the event loop.
        await asyncio.to_thread(self._write, payload)

    def _write(self, payload: bytes) -> None:
        try:
            self._write_all(payload)
            self._stream.flush()
        except BrokenPipeError as exc:
            raise SinkError("stdout closed by the reader", retriable=False,
                            reason="broken_pipe") from exc
        except OSError as exc:
            raise SinkError(f"stdout write failed: {exc.strerror}", retriable=True,
                            reason="io_error") from exc

    def _write_all(self, payload: bytes) -> None:
        # An unbuffered stdout (PYTHONUNBUFFERED, python -u) is a raw file: a write blocked on
        # a full pipe comes back short when the process is stopped and continued. What it
        # did not take would be lost while the batch counts as delivered.
        view = memoryview(payload)
        while view:
            written = self._stream.write(view)
            if not written:  # None: a non-blocking stream that took nothing; 0: no progress
                raise OSError(errno.EAGAIN, "stdout took nothing")
            view = view[written:]

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        # The reader left, the device is full or the stream is already closed: whatever is
        # still buffered belongs to a batch whose send already failed (and was reported).
        with contextlib.suppress(OSError, ValueError):
            await asyncio.to_thread(self._stream.flush)
