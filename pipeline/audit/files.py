"""An audit of files: the JSON-lines input the daemon read (stdin or source.path), the
JSON-lines output it wrote (the stdout sink), and its file dead-letter."""

from __future__ import annotations

from pathlib import Path

from pipeline.audit.progress import Progress
from pipeline.audit.trail import NO_LIMIT, Stream, TrailAudit
from pipeline.cloudevents.codec import decode_object
from pipeline.cloudevents.mapping import InvalidEvent
from pipeline.deadletter.file import FILE_PREFIX


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


def read_output(audit: TrailAudit, path: Path, progress: Progress) -> None:
    """Every non-blank line of `path` is one output event."""
    progress.start(f"output {path}")
    with path.open("rb") as lines:
        for number, line in enumerate(lines, start=1):
            if line.strip():
                audit.output(line.rstrip(b"\r\n"), f"{path} line {number}")
                progress.tick()
    progress.done()


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
