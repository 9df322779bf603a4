"""CloudEvents Kafka protocol binding, binary content mode: `ce_*` headers + the value as
data, decoded into the structured form the mapper takes."""

from __future__ import annotations

import base64
from collections.abc import Sequence
from typing import Any

from pipeline.cloudevents.codec import decode_any
from pipeline.cloudevents.mapping import InvalidEvent

HEADER_PREFIX = "ce_"


def is_binary_mode(headers: Sequence[tuple[str, bytes]]) -> bool:
    return any(name.startswith(HEADER_PREFIX) for name, _ in headers)


def binary_to_structured(headers: Sequence[tuple[str, bytes]], value: bytes,
                         max_bytes: int) -> dict[str, Any]:
    """A structured CloudEvent from a binary-mode record, or `InvalidEvent("bad_headers")`."""
    event: dict[str, Any] = {}
    for name, raw in headers:
        lowered = name.lower()
        if lowered.startswith(HEADER_PREFIX):
            attribute = lowered[len(HEADER_PREFIX):]
        elif lowered == "content-type":
            attribute = "datacontenttype"
        else:
            continue
        if not attribute or attribute in event:
            raise InvalidEvent("bad_headers", f"empty or repeated CloudEvents header {name!r}")
        try:
            event[attribute] = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidEvent("bad_headers", f"header {name!r} is not UTF-8") from None
    if value:
        event.update(_data(value, event.get("datacontenttype"), max_bytes))
    return event


def _data(value: bytes, content_type: str | None, max_bytes: int) -> dict[str, Any]:
    if content_type is None or "json" in content_type.lower():
        return {"data": decode_any(value, max_bytes)}
    # Opaque data travels as base64, as in the structured JSON format.
    return {"data_base64": base64.b64encode(value).decode("ascii")}
