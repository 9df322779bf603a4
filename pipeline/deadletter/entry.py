"""A dead-letter entry, and the JSON a store keeps: the entry itself, and the marker that
says an entry was replayed.

An entry is written for every rejected record (origin "source") and every event a sink gave
up on (origin = the sink). Bytes are stored as text when they are UTF-8 (readable), else as
base64 under `<name>_b64`; `stored_bytes` reads either form back.

Each entry names its record's position twice: `source` (topic, partition, offset; for a line
source the input name, 0 and the line number) and `position`, the same `agt*` attributes a
delivered event carries. Written by the daemon, an entry is signed as an event is (the
`agtsignaturealg`, `agtkeyid` and `agtsignature` members, over the same canonical form of
the entry without `agtsignature`), so `govpipe verify` and `govpipe audit` check it with
the same keys: a rejection is as verifiable as a delivery.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson

from pipeline.cloudevents.codec import encode
from pipeline.cloudevents.position import position_attributes
from pipeline.model import Position
from pipeline.signing.signers import Signer


@dataclass(frozen=True, slots=True)
class DeadLetterEntry:
    """What went wrong with which record: enough to inspect it and to replay it."""

    origin: str
    reason: str
    error: str
    position: Position
    value: bytes | None = None
    event: Mapping[str, Any] | None = None
    key: bytes | None = None
    headers: tuple[tuple[str, bytes], ...] = ()
    sink: str | None = None
    time: str = field(default_factory=lambda: datetime.now(UTC).isoformat())

    @property
    def entry_id(self) -> str:
        """Stable across restarts: the same record failing the same way has the same id,
        so `govpipe replay` puts it back once."""
        what = str(self.event.get("id")) if self.event is not None else hashlib.sha256(
            self.value or b"").hexdigest()
        p = self.position
        text = f"{self.origin}|{p.topic}|{p.partition}|{p.offset}|{what}"
        return hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]

    def to_json(self, max_bytes: int | None = None, signer: Signer | None = None) -> bytes:
        """The entry as JSON, signed by `signer` when given; over `max_bytes`, a summary that
        identifies the record instead (its position, size and SHA-256) without carrying its
        value, event, key or headers."""
        return self.encoded(max_bytes, signer)[0]

    def encoded(self, max_bytes: int | None = None, signer: Signer | None = None
                ) -> tuple[bytes, bool]:
        """`to_json`, and whether that is the entry whole (False: its summary)."""
        full = encode(_signed(self._fields(full=True), signer))
        if max_bytes is None or len(full) <= max_bytes:
            return full, True
        return self._summary(len(full), signer), False

    def _summary(self, entry_bytes: int, signer: Signer | None) -> bytes:
        summary = self._fields(full=False)
        summary["truncated"] = True
        summary["entry_bytes"] = entry_bytes
        if self.value is not None:
            summary["value_bytes"] = len(self.value)
            summary["value_sha256"] = hashlib.sha256(self.value).hexdigest()
        if self.event is not None:
            summary["event_id"] = self.event.get("id")
        return encode(_signed(summary, signer))

    def _fields(self, *, full: bool) -> dict[str, Any]:
        entry: dict[str, Any] = {
            "id": self.entry_id, "time": self.time, "origin": self.origin, "sink": self.sink,
            "reason": self.reason, "error": self.error, "source": self.position.as_dict(),
            "position": position_attributes(self.position),
        }
        if not full:
            return entry
        if self.event is not None:
            entry["event"] = self.event
        if self.value is not None:
            entry.update(_bytes_field("value", self.value))
        if self.key is not None:
            entry.update(_bytes_field("key", self.key))
        if self.headers:
            entry["headers"] = [[name, _b64(value)] for name, value in self.headers]
        return entry


def _signed(fields: dict[str, Any], signer: Signer | None) -> dict[str, Any]:
    return fields if signer is None else signer.sign(fields)


def _b64(value: bytes) -> str:
    return base64.b64encode(value).decode("ascii")


def _bytes_field(name: str, value: bytes) -> dict[str, str]:
    """Text when the bytes are UTF-8 (readable), else base64 under `<name>_b64`."""
    try:
        return {name: value.decode("utf-8")}
    except UnicodeDecodeError:
        return {f"{name}_b64": _b64(value)}


def stored_bytes(entry: Mapping[str, Any], name: str) -> bytes | None:
    """The bytes a stored entry holds under `name` (either form), None when it has none."""
    if isinstance(entry.get(name), str):
        return str(entry[name]).encode("utf-8")
    if isinstance(entry.get(f"{name}_b64"), str):
        return base64.b64decode(entry[f"{name}_b64"])
    return None


def marker(entry_id: str) -> bytes:
    """The JSON that records entry `entry_id` as replayed."""
    return orjson.dumps({"replayed": entry_id, "time": datetime.now(UTC).isoformat()})


def is_marker(value: Mapping[str, Any]) -> bool:
    return "replayed" in value and "origin" not in value
