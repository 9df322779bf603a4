"""The accounting of one audit: which input positions exist, what the signed output and the
signed dead-letter entries say became of each, and what that adds up to.

Only what verifies counts: an event or entry whose signature fails is a bad signature and
accounts for nothing (its position is missing unless something that verifies covers it).
"""

from __future__ import annotations

import hashlib
import re
import sys
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import orjson

from pipeline.cloudevents.binding import binary_to_structured, is_binary_mode
from pipeline.cloudevents.codec import decode_object
from pipeline.cloudevents.mapping import InvalidEvent
from pipeline.cloudevents.position import position_of
from pipeline.deadletter.entry import is_marker
from pipeline.model import Position
from pipeline.signing.verification import Verifier

NOT_JSON = "not_json"
NO_LIMIT = sys.maxsize  # a line or record is whole already; no size cap
_LONG_DIGITS = re.compile(rb"\d{19}")  # maybe an integer beyond what orjson reads exactly


class Stream(NamedTuple):
    """One sequence of input positions: a Kafka partition, or the lines of one input."""

    kind: str  # "kafka" or "line"
    name: str  # topic, or input name
    partition: int

    @classmethod
    def of(cls, position: Position) -> Stream:
        return cls(position.kind, position.topic, position.partition)

    def where(self, first: int, last: int | None = None) -> str:
        """`first` (to `last`) of this stream, as a person reads it."""
        span = str(first) if last is None or last == first else f"{first}-{last}"
        if self.kind == "line":
            noun = "line" if last is None or last == first else "lines"
            return f"{self.name} {noun} {span}"
        noun = "offset" if last is None or last == first else "offsets"
        return f"{self.name}/{self.partition} {noun} {span}"


@dataclass(frozen=True, slots=True)
class Finding:
    """One thing the audit found that is not a clean delivery (`where` names the copy)."""

    kind: str  # bad_signature, unknown_position, no_position, duplicate
    where: str
    detail: str = ""


@dataclass(slots=True)
class Expected:
    """The input positions of one stream: those present, and where retention cut it."""

    offsets: set[int] = field(default_factory=set)
    removed_below: int = 0


class TrailAudit:
    """Feed it the input positions, then every output record and dead-letter entry."""

    def __init__(self, verifier: Verifier) -> None:
        self._verifier = verifier
        self.expected: dict[Stream, Expected] = {}
        # Per stream, per offset: the digest of the first verified copy delivered, and of
        # each further copy (kept apart: a list per offset would double the memory).
        self.delivered: dict[Stream, dict[int, bytes]] = defaultdict(dict)
        self.more_copies: dict[Stream, dict[int, list[bytes]]] = defaultdict(dict)
        self.deadlettered: dict[Stream, set[int]] = defaultdict(set)
        self.findings: list[Finding] = []
        self.bad_signatures = 0

    def expect(self, stream: Stream, offsets: Iterable[int], removed_below: int = 0) -> None:
        """Input positions of `stream` (those below `removed_below` are gone by retention)."""
        expected = self.expected.setdefault(stream, Expected())
        expected.offsets.update(offsets)
        expected.removed_below = max(expected.removed_below, removed_below)

    def output(self, raw: bytes, where: str,
               headers: Sequence[tuple[str, bytes]] = ()) -> None:
        """One output record (a structured CloudEvent, or binary mode with `ce_` headers)."""
        self.checked_output(check_output(self._verifier, raw, headers), where)

    def checked_output(self, checked: CheckedOutput, where: str) -> None:
        """One output record, already checked (`check_output`, maybe in another process)."""
        if checked.failure is not None:
            self._bad(where, checked.failure)
        elif checked.position is None:
            self.findings.append(Finding("no_position", where))
        else:
            position = checked.position
            self._delivered(Stream.of(position), position.offset, checked.digest)

    def deadletter(self, entry: Mapping[str, Any], where: str) -> None:
        """One dead-letter entry (replay markers are passed over)."""
        if is_marker(entry):
            return
        failure = self._verifier.failure(entry)
        if failure is not None:
            self._bad(where, failure)
            return
        named = entry.get("position")
        position = self._position(named if isinstance(named, Mapping) else {}, where)
        if position is not None:
            self.deadlettered[Stream.of(position)].add(position.offset)

    def copies(self, stream: Stream, offset: int) -> list[bytes]:
        """The digests of every verified copy delivered for a position."""
        first = self.delivered.get(stream, {}).get(offset)
        more = self.more_copies.get(stream, {}).get(offset, [])
        return [first, *more] if first is not None else []

    def _delivered(self, stream: Stream, offset: int, digest: bytes) -> None:
        delivered = self.delivered[stream]
        if offset in delivered:
            self.more_copies[stream].setdefault(offset, []).append(digest)
        else:
            delivered[offset] = digest

    def unreadable(self, where: str, what: str = NOT_JSON) -> None:
        """Something in the output or dead-letter that is not even JSON: it cannot verify."""
        self._bad(where, what)

    def _position(self, attributes: Mapping[str, Any], where: str) -> Position | None:
        """The position a verified event or entry names; a finding when it names none."""
        position = position_of(attributes)
        if position is None:
            self.findings.append(Finding("no_position", where))
        return position

    def _bad(self, where: str, reason: str) -> None:
        self.bad_signatures += 1
        self.findings.append(Finding("bad_signature", where, reason))


class CheckedOutput(NamedTuple):
    """What one output record proves: a failure, or the position it names (None: none) and
    the digest that tells copies apart."""

    failure: str | None
    position: Position | None = None
    digest: bytes = b""


def check_output(verifier: Verifier, raw: bytes,
                 headers: Sequence[tuple[str, bytes]] = ()) -> CheckedOutput:
    """Decode and verify one output record (binary mode when `ce_` headers come with it)."""
    binary = bool(headers) and is_binary_mode(headers)
    try:
        event = binary_to_structured(headers, raw, NO_LIMIT) if binary else _fast_object(raw)
    except InvalidEvent:
        return CheckedOutput(NOT_JSON)
    failure = verifier.failure(event)
    if failure is not None and not binary and (exact := _exact_object(raw)) is not None:
        failure = verifier.failure(exact)
    if failure is not None:
        return CheckedOutput(failure)
    return CheckedOutput(None, position_of(event), _digest(raw, headers))


def _fast_object(raw: bytes) -> dict[str, Any]:
    """orjson alone: the strict codec's scan for long integers costs as much as the parse,
    and a long integer orjson reads inexactly only makes the signature fail (then
    `_exact_object` reads it again)."""
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return decode_object(raw, NO_LIMIT)
    if not isinstance(value, dict):
        raise InvalidEvent("not_object", "not a JSON object")
    return value


def _exact_object(raw: bytes) -> dict[str, Any] | None:
    """`raw` read by the strict codec (integers beyond 64 bits exactly), when it holds a run
    of digits that may be one; else None."""
    if _LONG_DIGITS.search(raw) is None:
        return None
    try:
        return decode_object(raw, NO_LIMIT)
    except InvalidEvent:
        return None


def _digest(raw: bytes, headers: Sequence[tuple[str, bytes]]) -> bytes:
    digest = hashlib.blake2b(raw, digest_size=16)
    for name, value in headers:
        digest.update(b"\0%s\0%s" % (name.encode("utf-8", "replace"), value))
    return digest.digest()
