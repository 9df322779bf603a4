"""What `govpipe replay` puts back on the input, whatever store the entries come from:
which entries (`ReplayFilter`, `make_plan`) and the record each stands for (`to_record`)."""

from __future__ import annotations

import base64
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from pipeline.cloudevents.codec import encode
from pipeline.deadletter.entry import is_marker, stored_bytes

# On every replayed record: the id of the entry it came from.
REPLAYED_HEADER = "govpipe-replayed"


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
    value = stored_bytes(entry, "value")
    if value is None:
        return None
    headers = tuple((str(name), base64.b64decode(raw)) for name, raw in entry.get("headers", [])
                    if name != REPLAYED_HEADER)
    return ReplayRecord(entry_id, value, stored_bytes(entry, "key"), headers + marker)


@dataclass
class Plan:
    """What a replay will do, counted."""

    records: list[ReplayRecord] = field(default_factory=list)
    already: int = 0
    not_matching: int = 0
    unusable: int = 0


def make_plan(entries: Iterable[Mapping[str, Any]], done: set[str], selected: ReplayFilter,
              again: bool) -> Plan:
    """The records to put back, in store order; `done`: the ids already replayed, put back
    again only with `again`."""
    plan = Plan()
    # A dead-letter write retried after a partial failure can store an entry twice (same
    # id): it goes back once, and the copy counts as already replayed.
    planned: set[str] = set()
    for entry in entries:
        if is_marker(entry):
            continue
        entry_id = str(entry.get("id") or "")
        if not selected.matches(entry):
            plan.not_matching += 1
        elif (not again and entry_id in done) or (entry_id and entry_id in planned):
            plan.already += 1
        elif (record := to_record(entry)) is None:
            plan.unusable += 1
        else:
            plan.records.append(record)
            planned.add(record.entry_id)
    return plan
