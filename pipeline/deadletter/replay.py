"""Dead-letter entries back onto the input (`govpipe replay`).

Entries are read from the configured dead-letter destination (a JSONL directory or a Kafka
topic), filtered, and put back where the daemon reads: the source topic for a Kafka source,
standard output (JSON lines, for `govpipe replay | govpipe run`) otherwise. Each replayed
entry is then marked (a `replayed.jsonl` file beside the entries, or a marker record on the
dead-letter topic), so running replay again does not put it back twice.
"""

from __future__ import annotations

import base64
import os
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO

import orjson

from pipeline.cloudevents.codec import encode
from pipeline.deadletter.stores import FILE_PREFIX

REPLAYED_HEADER = "govpipe-replayed"
MARKER_FILE = "replayed.jsonl"


@dataclass(frozen=True, slots=True)
class ReplayFilter:
    """Which entries to replay; None matches anything."""

    sink: str | None = None
    reason: str | None = None
    origin: str | None = None
    since: datetime | None = None
    until: datetime | None = None

    def matches(self, entry: Mapping[str, Any]) -> bool:
        for key in ("sink", "reason", "origin"):
            wanted = getattr(self, key)
            if wanted is not None and entry.get(key) != wanted:
                return False
        if self.since is None and self.until is None:
            return True
        when = _parse_time(entry.get("time"))
        if when is None:
            return False
        return (self.since is None or when >= self.since) and (
            self.until is None or when <= self.until)


def _parse_time(value: object) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class ReplayRecord:
    """What goes back on the input for one entry."""

    entry_id: str
    value: bytes
    key: bytes | None
    headers: tuple[tuple[str, bytes], ...]


def to_record(entry: Mapping[str, Any]) -> ReplayRecord | None:
    """The input record an entry stands for: the signed event a sink gave up on, or the
    original bytes of a rejected record. None when the entry holds neither."""
    entry_id = str(entry.get("id") or "")
    marker = ((REPLAYED_HEADER, entry_id.encode()),)
    event = entry.get("event")
    if isinstance(event, dict):
        key = event.get("partitionkey")
        return ReplayRecord(entry_id, encode(event),
                            key.encode() if isinstance(key, str) else None, marker)
    value = _bytes(entry, "value")
    if value is None:
        return None
    headers = tuple((str(name), base64.b64decode(raw)) for name, raw in entry.get("headers", [])
                    if name != REPLAYED_HEADER)
    return ReplayRecord(entry_id, value, _bytes(entry, "key"), headers + marker)


def _bytes(entry: Mapping[str, Any], name: str) -> bytes | None:
    if isinstance(entry.get(name), str):
        return str(entry[name]).encode("utf-8")
    if isinstance(entry.get(f"{name}_b64"), str):
        return base64.b64decode(entry[f"{name}_b64"])
    return None


def is_marker(entry: Mapping[str, Any]) -> bool:
    return "replayed" in entry and "origin" not in entry


def marker(entry_id: str) -> bytes:
    return orjson.dumps({"replayed": entry_id, "time": datetime.now(UTC).isoformat()})


@dataclass(frozen=True, slots=True)
class LineProblem:
    """A line of a dead-letter or marker file that is not a JSON object: where it is and
    what is wrong, never what it holds (it may be the rejected record)."""

    path: Path
    line: int
    what: str
    salvaged: bool = False

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.what}"


class FileEntries:
    """Entries in a dead-letter directory, and the marker file of what was replayed.

    Reading never skips a line silently: each line that is not a JSON object is kept in
    `problems` (entry files) or `marker_problems` (the marker file) for the caller to report.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.problems: list[LineProblem] = []
        self.marker_problems: list[LineProblem] = []

    def entries(self) -> Iterator[dict[str, Any]]:
        for path in sorted(self.directory.glob(f"{FILE_PREFIX}*.jsonl")):
            yield from _json_lines(path, self.problems)

    def replayed(self) -> set[str]:
        path = self.directory / MARKER_FILE
        if not path.exists():
            return set()
        return {str(m["replayed"]) for m in _json_lines(path, self.marker_problems)
                if is_marker(m)}

    def mark(self, entry_ids: Iterable[str]) -> None:
        lines = b"".join(marker(entry_id) + b"\n" for entry_id in entry_ids)
        if not lines:
            return
        with (self.directory / MARKER_FILE).open("a+b") as handle:
            # After a marker torn by a crash, a new line: appended to it, this one is lost too.
            if _ends_torn(handle):
                lines = b"\n" + lines
            handle.write(lines)


def _ends_torn(handle: BinaryIO) -> bool:
    end = handle.seek(0, os.SEEK_END)
    if end == 0:
        return False
    handle.seek(end - 1)
    return handle.read(1) != b"\n"


def _json_lines(path: Path, problems: list[LineProblem]) -> Iterator[dict[str, Any]]:
    """The JSON objects in `path`, one a line; every other line goes to `problems`."""
    with path.open("rb") as handle:
        for number, line in enumerate(handle, start=1):
            value = _object(line)
            if value is None:
                value = _salvage(line)
                problems.append(_problem(path, number, line, salvaged=value is not None))
            if value is not None:
                yield value


def _object(line: bytes) -> dict[str, Any] | None:
    try:
        value = orjson.loads(line)
    except orjson.JSONDecodeError:
        return None
    return value if isinstance(value, dict) else None


def _salvage(line: bytes) -> dict[str, Any] | None:
    """The whole entry at the end of a line an older dead-letter writer left as `<partial
    entry><complete entry>`: a write cut short, then the whole batch written again after
    it. The retry held the cut entry too, so reading the entry at the end loses nothing."""
    start = line.rfind(b'{"id":"', 1)
    value = _object(line[start:]) if start > 0 else None
    return value if value is not None and "origin" in value else None


def _problem(path: Path, number: int, line: bytes, *, salvaged: bool) -> LineProblem:
    what = ("torn last line, probably a crash mid-write" if not line.endswith(b"\n")
            else "not a JSON object")
    if salvaged:
        what += "; salvaged the complete entry at its end"
    else:
        what += "; skipped"
    return LineProblem(path, number, what, salvaged)
