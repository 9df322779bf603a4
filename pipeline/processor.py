"""Turns one raw record into a signed, serialized CloudEvent, or a rejection with a reason."""

from __future__ import annotations

import logging
from typing import Any

from pipeline.binding import binary_to_structured, is_binary_mode
from pipeline.codec import decode_object, encode
from pipeline.events import InvalidEvent, to_cloudevent
from pipeline.model import Record, Rejection, SignedEvent
from pipeline.signing import Signer

log = logging.getLogger(__name__)


class EventProcessor:
    """decode → map → sign → serialize, once per record; never raises for bad input."""

    def __init__(self, signer: Signer, max_event_bytes: int, configured_source: str = "") -> None:
        self._signer = signer
        self._max_bytes = max_event_bytes
        self._configured_source = configured_source or None

    def process(self, record: Record) -> SignedEvent | Rejection:
        try:
            obj = self._decode(record)
            signed = self._signer.sign(to_cloudevent(obj, self._configured_source))
            body = encode(signed)
        except InvalidEvent as exc:
            return Rejection(exc.reason, exc.detail, record)
        except (ValueError, TypeError, RecursionError) as exc:
            # Valid JSON that cannot be signed or written as strict JSON (lone surrogates,
            # nesting past the serializer's depth limit...).
            return Rejection("unserializable", f"{type(exc).__name__}: {str(exc)[:200]}", record)
        key = signed.get("partitionkey")
        return SignedEvent(id=signed["id"], attributes=signed, body=body,
                           position=record.position,
                           partition_key=key if isinstance(key, str) else None)

    def _decode(self, record: Record) -> dict[str, Any]:
        if record.headers and is_binary_mode(record.headers):
            return binary_to_structured(record.headers, record.value, self._max_bytes)
        return decode_object(record.value, self._max_bytes)
