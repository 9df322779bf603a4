"""The spool's on-disk entry: a length-prefixed, checksummed frame.

A frame is `>II` (body length, CRC-32 of the body) followed by the body: `>QH` (the time it
was spooled, ms since the epoch; the key's length), the key (the event's agent_id, UTF-8,
possibly empty) and the value (the event's JSON, exactly the bytes that will be sent and
signed). A frame is written whole in one write, so a crash can leave at most one torn
frame, at the tail of the newest segment; the CRC finds it.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

HEADER = struct.Struct(">II")
BODY_HEAD = struct.Struct(">QH")
MAX_KEY_BYTES = 0xFFFF


@dataclass(frozen=True, slots=True)
class SpoolEntry:
    """One spooled event: the record key and value as they will be sent."""

    key: bytes
    value: bytes
    spooled_at_ms: int

    @property
    def size(self) -> int:
        """Bytes this entry takes in the spool."""
        return HEADER.size + BODY_HEAD.size + len(self.key) + len(self.value)


def encode(entry: SpoolEntry) -> bytes:
    """The frame for one entry."""
    body = BODY_HEAD.pack(entry.spooled_at_ms, len(entry.key)) + entry.key + entry.value
    return HEADER.pack(len(body), zlib.crc32(body)) + body


def decode(data: bytes | memoryview, offset: int) -> tuple[SpoolEntry, int] | None:
    """The entry whose frame starts at `offset` and the offset after it; None when the
    frame there is incomplete or fails its checksum (a torn or damaged tail)."""
    if len(data) - offset < HEADER.size:
        return None
    length, crc = HEADER.unpack_from(data, offset)
    start, end = offset + HEADER.size, offset + HEADER.size + length
    if length < BODY_HEAD.size or end > len(data):
        return None
    body = bytes(data[start:end])
    if zlib.crc32(body) != crc:
        return None
    spooled_at_ms, key_length = BODY_HEAD.unpack_from(body)
    if BODY_HEAD.size + key_length > length:
        return None
    key_end = BODY_HEAD.size + key_length
    return SpoolEntry(body[BODY_HEAD.size:key_end], body[key_end:], spooled_at_ms), end


def frame_length(data: bytes | memoryview, offset: int) -> int | None:
    """The whole length of the frame starting at `offset`, if its header is there."""
    if len(data) - offset < HEADER.size:
        return None
    length, _ = HEADER.unpack_from(data, offset)
    return int(HEADER.size + length)


def valid_prefix(data: bytes | memoryview) -> tuple[int, int, int | None]:
    """(bytes, entries) of the run of whole, valid frames at the start of `data`, and the
    spool time of the first one (None when there is none)."""
    offset, entries, first_ms = 0, 0, None
    while (decoded := decode(data, offset)) is not None:
        entry, offset = decoded
        entries += 1
        if first_ms is None:
            first_ms = entry.spooled_at_ms
    return offset, entries, first_ms
