"""An audit of files: the JSON-lines input the daemon read (stdin or source.path), the
JSON-lines output it wrote (the stdout sink), and its file dead-letter."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

from pipeline.audit.progress import Progress
from pipeline.audit.trail import NO_LIMIT, Stream, TrailAudit
from pipeline.audit.workers import OutputChecker
from pipeline.cloudevents.codec import decode_object
from pipeline.cloudevents.mapping import InvalidEvent
from pipeline.deadletter.file import FILE_PREFIX

CHUNK = 2_000  # output lines a worker checks at a time


def expect_lines(audit: TrailAudit, path: Path, name: str, progress: Progress) -> None:
    """Each non-blank line of `path` is an input position `name` line N, counted as the
    line source counts them (blank lines numbered, not records)."""
    progress.start(f"input {path}")
    numbers = []
    with path.open("rb") as lines:
        for number, line in enumerate(lines, start=1):
            if line.strip():
                numbers.append(number)
                progress.tick()
    progress.done()
    audit.expect(Stream("line", name, 0), numbers)


def read_output(audit: TrailAudit, path: Path, progress: Progress,
                checker: OutputChecker) -> None:
    """Every non-blank line of `path` is one output event."""
    progress.start(f"output {path}")
    with path.open("rb") as lines:
        for numbers, checks in checker.checked(_numbered_chunks(lines)):
            for number, checked in zip(numbers, checks, strict=True):
                audit.checked_output(checked, f"{path} line {number}")
                progress.tick()
    progress.done()


def _numbered_chunks(lines: Iterable[bytes]) -> Iterator[tuple[list[int], list[bytes]]]:
    """The non-blank lines, CHUNK at a time, with their line numbers."""
    numbers: list[int] = []
    chunk: list[bytes] = []
    for number, line in enumerate(lines, start=1):
        if line.strip():
            numbers.append(number)
            chunk.append(line.rstrip(b"\r\n"))
            if len(chunk) == CHUNK:
                yield numbers, chunk
                numbers, chunk = [], []
    if chunk:
        yield numbers, chunk


def read_deadletter(audit: TrailAudit, path: Path, progress: Progress) -> None:
    """The entries of a dead-letter file, or of every entry file in a dead-letter directory."""
    files = sorted(path.glob(f"{FILE_PREFIX}*.jsonl")) if path.is_dir() else [path]
    for file in files:
        progress.start(f"dead-letter {file}")
        with file.open("rb") as lines:
            for number, line in enumerate(lines, start=1):
                if not line.strip():
                    continue
                where = f"{file} line {number}"
                try:
                    entry = decode_object(line, NO_LIMIT)
                except InvalidEvent:
                    audit.unreadable(where)
                    continue
                audit.deadletter(entry, where)
                progress.tick()
        progress.done()
