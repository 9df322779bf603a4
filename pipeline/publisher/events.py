"""One governance event → the record key and value that are spooled and sent.

Each event is serialized on its own, so one bad event is refused alone, never its batch.
Values Agent OS's own sinks write with `default=str` (datetimes, UUIDs, enums…) are written
the same way; NaN and infinities are refused, because the daemon rejects them as invalid
JSON and a refusal the agent sees beats a dead-letter entry it does not.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


class EventRefused(Exception):
    """An event that cannot be published; `reason` is the label it is counted under."""

    def __init__(self, reason: str, detail: str, event_id: object = None) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail
        self.event_id = event_id


@dataclass(frozen=True, slots=True)
class EncodedEvent:
    """The record for one event: key (agent_id, UTF-8) and value (compact JSON)."""

    key: bytes
    value: bytes
    event_id: object


def event_payload(event: Any) -> dict[str, Any]:
    """A plain dict from an event object with `to_dict()` or from a mapping."""
    to_dict = getattr(event, "to_dict", None)
    payload = to_dict() if callable(to_dict) else event
    if not isinstance(payload, Mapping):
        raise TypeError(f"not an event: {type(event).__name__} (need a dict or to_dict())")
    return dict(payload)


def encode_event(event: Any, max_bytes: int) -> EncodedEvent:
    """The record for `event`; raises EventRefused (reason `not_an_event`,
    `not_finite`, `not_serializable` or `too_large`)."""
    try:
        payload = event_payload(event)
    except Exception as exc:  # a to_dict() that raises is the event's fault, not the batch's
        raise EventRefused("not_an_event", f"{type(exc).__name__}: {exc}") from None
    event_id = payload.get("event_id")
    try:
        text = json.dumps(payload, ensure_ascii=False, separators=(",", ":"),
                          allow_nan=False, default=str)
    except ValueError as exc:
        if "not JSON compliant" in str(exc):
            raise EventRefused("not_finite", "NaN or infinity in the event (not JSON)",
                               event_id) from None
        raise EventRefused("not_serializable", str(exc), event_id) from None
    except (TypeError, RecursionError) as exc:
        raise EventRefused("not_serializable", f"{type(exc).__name__}: {exc}",
                           event_id) from None
    try:
        value = text.encode("utf-8")
    except UnicodeEncodeError:
        raise EventRefused("not_serializable", "a lone surrogate in a string (not UTF-8)",
                           event_id) from None
    if len(value) > max_bytes:
        raise EventRefused("too_large", f"{len(value)} bytes, more than {max_bytes}",
                           event_id)
    agent_id = payload.get("agent_id")
    # agent_id is inside the value, which encoded, so it encodes; the key only partitions.
    key = agent_id.encode("utf-8")[:0xFFFF] if isinstance(agent_id, str) else b""
    return EncodedEvent(key, value, event_id)
