"""What a CloudEvent's data is, by its `datacontenttype`, and the rules for `data` members.

The JSON event format carries data three ways: JSON data as a JSON value (`data`, content
type JSON or absent), text as a string (`data`, any other content type), bytes as base64
(`data_base64`). The Kafka binary mode writes each as its own bytes, so each must be
unambiguous here: a non-JSON content type with non-string `data` is refused, as are
`data` and `data_base64` together, null data and base64 that does not decode.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Mapping
from typing import Any

from pipeline.cloudevents.errors import InvalidEvent

INVALID = "invalid_cloudevent"
# application/json, text/json and structured-syntax +json types, parameters allowed: the
# types both the Python and the Go SDK read as JSON.
_JSON_TYPE = re.compile(r"(application|text)/([a-z0-9\-.]+\+)?json", re.IGNORECASE)


def media_type(content_type: str) -> str:
    """`type/subtype` of a content type, without parameters or surrounding space."""
    return content_type.split(";", 1)[0].strip()


def is_json_content(content_type: object) -> bool:
    """True when data of this `datacontenttype` is JSON (absent means JSON)."""
    if content_type is None:
        return True
    return isinstance(content_type, str) and _JSON_TYPE.fullmatch(media_type(content_type)) \
        is not None


def is_text_content(content_type: object) -> bool:
    """True for `text/*` content other than JSON: data read as a UTF-8 string."""
    return isinstance(content_type, str) and not is_json_content(content_type) and \
        media_type(content_type).lower().startswith("text/")


def check_data(event: Mapping[str, Any]) -> None:
    """Raise `InvalidEvent` unless the event's `data` / `data_base64` are unambiguous."""
    if "data" in event and "data_base64" in event:
        raise InvalidEvent(INVALID, "data and data_base64 are both set")
    if "data_base64" in event:
        _check_base64(event["data_base64"])
    elif "data" in event:
        data = event["data"]
        if data is None:
            raise InvalidEvent(INVALID, "data is null (leave it out for an event without data)")
        if not is_json_content(event.get("datacontenttype")) and not isinstance(data, str):
            raise InvalidEvent(INVALID, "data of a non-JSON datacontenttype must be a string "
                               "(or bytes as data_base64)")


def _check_base64(value: object) -> None:
    if not isinstance(value, str):
        raise InvalidEvent(INVALID, "data_base64 must be a base64 string")
    try:
        base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidEvent(INVALID, "data_base64 is not valid base64") from None
