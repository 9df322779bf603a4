"""The stdout sink writes every byte of a batch, however little each write takes."""

from __future__ import annotations

import io

from sinks.stdout import StdoutSink
from tests.support.fakes import make_event


class ShortWrites(io.RawIOBase):
    """A raw stream that takes at most `most` bytes per write, as an unbuffered stdout
    does on a pipe when a blocked write is interrupted (SIGSTOP, then SIGCONT)."""

    def __init__(self, most: int) -> None:
        self.most = most
        self.data = bytearray()

    def writable(self) -> bool:
        return True

    def write(self, b: bytes | bytearray | memoryview) -> int:  # type: ignore[override]
        taken = bytes(b[:self.most])
        self.data += taken
        return len(taken)


async def test_a_short_write_is_continued_not_lost() -> None:
    # Was: the rest of the batch after a short write was dropped, counted as delivered.
    stream = ShortWrites(most=7)
    sink = StdoutSink(stream)  # type: ignore[arg-type]
    batch = [make_event(offset) for offset in range(20)]
    await sink.send(batch)
    assert bytes(stream.data) == b"".join(event.body + b"\n" for event in batch)
