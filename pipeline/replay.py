"""Dead-letter entries back onto the input (`govpipe replay`).

Entries are read from the configured dead-letter destination (a JSONL directory or a Kafka
topic), filtered, and put back where the daemon reads: the source topic for a Kafka source,
standard output (JSON lines, for `govpipe replay | govpipe run`) otherwise. Each replayed
entry is then marked (a `replayed.jsonl` file beside the entries, or a marker record on the
dead-letter topic), so running replay again does not put it back twice.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from pipeline.codec import encode
from pipeline.deadletter import FILE_PREFIX

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


class FileEntries:
    """Entries in a dead-letter directory, and the marker file of what was replayed."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def entries(self) -> Iterator[dict[str, Any]]:
        for path in sorted(self.directory.glob(f"{FILE_PREFIX}*.jsonl")):
            yield from _json_lines(path)

    def replayed(self) -> set[str]:
        path = self.directory / MARKER_FILE
        return {str(m["replayed"]) for m in _json_lines(path) if is_marker(m)} \
            if path.exists() else set()

    def mark(self, entry_ids: Iterable[str]) -> None:
        lines = b"".join(marker(entry_id) + b"\n" for entry_id in entry_ids)
        if lines:
            with (self.directory / MARKER_FILE).open("ab") as handle:
                handle.write(lines)


def _json_lines(path: Path) -> Iterator[dict[str, Any]]:
    with path.open("rb") as handle:
        for line in handle:
            try:
                value = orjson.loads(line)
            except orjson.JSONDecodeError:
                continue  # a line cut short by a crash mid-write: nothing to replay
            if isinstance(value, dict):
                yield value
