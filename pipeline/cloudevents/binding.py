"""CloudEvents Kafka protocol binding, binary content mode: `ce_*` headers + the value as
data, decoded into the structured form the mapper takes.

Header names are taken as written after the `ce_` prefix (matched in any case): a header
`ce_Bad_Name` is the attribute `Bad_Name`, which the mapper refuses, never `bad_name`. The
value becomes `data` per the content type: JSON (or no content type) parsed as JSON, `text/*`
as its UTF-8 text, anything else as `data_base64`. An empty value is an event without data.

The same rule read backwards is how a consumer rebuilds a signed event from a binary-mode
record, so when govpipe writes binary mode, `check_binary_representable` refuses before
signing what that rebuild would get wrong: Boolean and Integer extensions (a header has no
type: `7` and `"7"` arrive alike, reason `typed_extension`), and data the content type
does not tell apart (a string under a type neither JSON nor `text/*`, `data_base64` under a
JSON or text type, empty data that would read as no data: reason `ambiguous_data`).
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from typing import Any

from pipeline.cloudevents.attributes import CONTEXT_ATTRIBUTES, DATA_MEMBERS
from pipeline.cloudevents.codec import decode_any
from pipeline.cloudevents.content import is_json_content, is_text_content
from pipeline.cloudevents.errors import InvalidEvent

HEADER_PREFIX = "ce_"
TYPED_EXTENSION = "typed_extension"
AMBIGUOUS_DATA = "ambiguous_data"


def is_binary_mode(headers: Sequence[tuple[str, bytes]]) -> bool:
    """True when the record carries CloudEvents attributes as `ce_*` headers."""
    return any(name[:3].lower() == HEADER_PREFIX for name, _ in headers)


def binary_to_structured(headers: Sequence[tuple[str, bytes]], value: bytes,
                         max_bytes: int) -> dict[str, Any]:
    """A structured CloudEvent from a binary-mode record, or `InvalidEvent("bad_headers")`."""
    event: dict[str, Any] = {}
    for name, raw in headers:
        if name[:3].lower() == HEADER_PREFIX:
            attribute = name[len(HEADER_PREFIX):]
        elif name.lower() == "content-type":
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
    if is_json_content(content_type):
        return {"data": decode_any(value, max_bytes)}
    if len(value) > max_bytes:
        raise InvalidEvent("too_large", f"value is {len(value)} bytes, over max_event_bytes")
    if is_text_content(content_type):
        try:
            return {"data": value.decode("utf-8")}
        except UnicodeDecodeError:
            pass  # text that is not UTF-8 is kept exactly, as bytes
    # Opaque data travels as base64, as in the structured JSON format.
    return {"data_base64": base64.b64encode(value).decode("ascii")}


def check_binary_representable(event: dict[str, Any]) -> None:
    """Raise `InvalidEvent` unless a consumer rebuilds `event` exactly from its binary-mode
    record (see the module docstring)."""
    for name, value in event.items():
        if name not in CONTEXT_ATTRIBUTES and name not in DATA_MEMBERS and \
                not isinstance(value, str):
            raise InvalidEvent(TYPED_EXTENSION, f"extension {name} is a "
                               f"{type(value).__name__}, which a Kafka header cannot carry")
    content_type = event.get("datacontenttype")
    if "data_base64" in event:
        ambiguous = is_json_content(content_type) or is_text_content(content_type) \
            or not event["data_base64"]
    elif isinstance(event.get("data"), str) and not is_json_content(content_type):
        ambiguous = not is_text_content(content_type) or not event["data"]
    else:
        ambiguous = False
    if ambiguous:
        raise InvalidEvent(AMBIGUOUS_DATA, f"data under datacontenttype {content_type!r} "
                           "would be read back from Kafka binary mode as something else")
