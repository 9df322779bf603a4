"""The stdout sink when its stream misbehaves: a write that never returns holds neither
`asyncio.run` nor the process exit, and a write that fails part-way leaves no torn line
between the events the stream carries."""

from __future__ import annotations

import asyncio
import errno
import io
import os
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from pipeline.model import Position, SignedEvent
from sinks.base import SinkError
from sinks.stdout import StdoutSink

ROOT = Path(__file__).parents[2]


def event(number: int) -> SignedEvent:
    return SignedEvent(id=f"e{number}", attributes={"id": f"e{number}"},
                       body=b'{"id":"e%d","data":"%s"}' % (number, b"x" * 20),
                       position=Position("t", 0, number))


BATCH = [event(number) for number in range(5)]
LINES = [e.body for e in BATCH]
LINE = len(LINES[0]) + 1


class BlockedForever(io.RawIOBase):
    """A stream whose writes wait until `release` is set: a reader that stopped reading."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()

    def writable(self) -> bool:
        return True

    def write(self, b: bytes | bytearray | memoryview) -> int:  # type: ignore[override]
        self.entered.set()
        self.release.wait()
        return len(b)


def test_a_write_blocked_forever_does_not_hold_asyncio_run() -> None:
    # Was: the write ran on the default executor, which asyncio.run joins without a time
    # limit on its way out: a stalled stdout reader kept the process past every deadline.
    stream = BlockedForever()

    async def main() -> None:
        sink = StdoutSink(stream)  # type: ignore[arg-type]
        send = asyncio.create_task(sink.send(BATCH))
        assert await asyncio.to_thread(stream.entered.wait, 10)
        send.cancel()
        await asyncio.gather(send, return_exceptions=True)
        assert send.cancelled()

    runner = threading.Thread(target=asyncio.run, args=(main(),), daemon=True)
    runner.start()
    runner.join(timeout=10)
    returned = not runner.is_alive()
    stream.release.set()  # let the blocked write (and, before the fix, asyncio.run) finish
    runner.join(timeout=10)
    assert returned, "asyncio.run did not return while a stdout write was blocked"


STALLED_READER = textwrap.dedent("""
    import asyncio, sys
    from pipeline.model import Position, SignedEvent
    from sinks.stdout import StdoutSink

    async def main():
        sink = StdoutSink()  # the real stdout: a pipe nobody reads
        big = SignedEvent(id="big", attributes={}, body=b"x" * 4_000_000,
                          position=Position("t", 0, 0))
        send = asyncio.create_task(sink.send([big]))
        await asyncio.sleep(0.5)  # the pipe is full long before
        send.cancel()
        await asyncio.gather(send, return_exceptions=True)
        try:
            await asyncio.wait_for(sink.aclose(), 0.5)
        except TimeoutError:
            pass

    asyncio.run(main())
    print("asyncio.run returned", file=sys.stderr, flush=True)
""")


def test_a_process_whose_stdout_reader_stalled_still_exits() -> None:
    # Was: the process never exited (the default executor's join); a daemon thread writing
    # through sys.stdout.buffer would hold its lock, which the interpreter's last flush of
    # sys.stdout waits for without end.
    env = {key: value for key, value in os.environ.items() if key != "PYTHONUNBUFFERED"}
    env["PYTHONPATH"] = str(ROOT)  # stdout buffered, as a default `govpipe run` has it
    proc = subprocess.Popen([sys.executable, "-c", STALLED_READER], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    started = time.monotonic()
    try:
        code = proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        pytest.fail(f"still running {time.monotonic() - started:.0f}s on with its stdout "
                    "reader stalled")
    finally:
        assert proc.stdout is not None
        assert proc.stderr is not None
        stderr = proc.stderr.read().decode(errors="replace")
        proc.stdout.close()
        proc.stderr.close()
    assert code == 0, stderr
    assert "asyncio.run returned" in stderr


class FailsPartWay(io.RawIOBase):
    """Follows a script, one step per write call: an int takes at most that many bytes,
    "error" raises EIO, "zero" takes nothing; with the script done, writes take all."""

    def __init__(self, *script: int | str) -> None:
        self.script = list(script)
        self.data = bytearray()

    def writable(self) -> bool:
        return True

    def write(self, b: bytes | bytearray | memoryview) -> int:  # type: ignore[override]
        step = self.script.pop(0) if self.script else len(b)
        if step == "error":
            raise OSError(errno.EIO, "Input/output error")
        if step == "zero":
            return 0
        assert isinstance(step, int)
        self.data += bytes(b[:step])
        return min(step, len(b))


async def send_until_delivered(sink: StdoutSink, attempts: int) -> int:
    """Send BATCH as the dispatcher does, again after each retriable failure; the failures."""
    failures: list[SinkError] = []
    for _ in range(attempts):
        try:
            await sink.send(BATCH)
        except SinkError as exc:
            failures.append(exc)
        else:
            assert all(failure.retriable for failure in failures)
            return len(failures)
    raise AssertionError(f"not delivered in {attempts} attempts")


def assert_whole_lines(data: bytes) -> None:
    assert data.endswith(b"\n")
    assert [line for line in data.splitlines() if line not in LINES] == []
    assert set(data.splitlines()) == set(LINES)


@pytest.mark.parametrize(("script", "failures"), [
    pytest.param((7, "error"), 1, id="error-mid-line"),
    pytest.param((LINE + 7, "zero"), 1, id="no-progress-mid-line"),
    pytest.param((7, "error", 5, "error"), 2, id="finishing-the-torn-line-fails-too"),
    pytest.param((7, "error", "error"), 2, id="finishing-the-torn-line-makes-no-progress"),
])
async def test_a_write_failing_part_way_leaves_no_torn_line(
        script: tuple[int | str, ...], failures: int) -> None:
    # Was: the retry wrote the whole batch right after the half-written line, gluing its
    # first event onto the torn one: one unreadable line, and the consumer lost both.
    stream = FailsPartWay(*script)
    sink = StdoutSink(stream)  # type: ignore[arg-type]
    assert await send_until_delivered(sink, attempts=5) == failures
    assert_whole_lines(bytes(stream.data))
    await sink.aclose()


async def test_a_write_failing_between_lines_writes_nothing_extra() -> None:
    # Two whole lines went out: the stream is torn nowhere, the retry is the batch alone.
    stream = FailsPartWay(2 * LINE, "error")
    sink = StdoutSink(stream)  # type: ignore[arg-type]
    assert await send_until_delivered(sink, attempts=3) == 1
    assert bytes(stream.data) == lines(BATCH[:2]) + lines(BATCH)
    await sink.aclose()


def lines(events: list[SignedEvent]) -> bytes:
    return b"".join(e.body + b"\n" for e in events)
