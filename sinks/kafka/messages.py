"""A signed CloudEvent as a Kafka message, per the CloudEvents Kafka protocol binding.

- structured mode (default): value = the signed CloudEvent JSON, header
  ``content-type: application/cloudevents+json; charset=UTF-8``.
- binary mode: one ``ce_<name>`` header per attribute (extensions and the signature
  included), ``content-type`` = ``datacontenttype``, and the value = the data in its own
  form: JSON data (JSON content type, or none) as JSON, text data (a string under any other
  content type) as its UTF-8 text, ``data_base64`` as the raw bytes. Header values are the
  attributes' canonical strings: booleans ``true``/``false``, integers in decimal.
- an event without data gets an empty value, never a null one: a null value is a tombstone,
  which a compacted topic deletes. Consumers read an empty value as "no data".

The key is the ``partitionkey`` extension, so one agent's events stay in order on one
partition.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Mapping
from typing import Any, Literal

import orjson

from pipeline.model import SignedEvent

__all__ = ["STRUCTURED_CONTENT_TYPE", "ContentMode", "Headers", "Message", "binary_message",
           "to_message"]

STRUCTURED_CONTENT_TYPE = b"application/cloudevents+json; charset=UTF-8"
ContentMode = Literal["structured", "binary"]
Headers = list[tuple[str, bytes]]
Message = tuple[bytes | None, bytes, Headers]  # key, value, headers
# The media types whose data is JSON (parameters aside): application/json, text/json and
# structured-syntax +json types, as both CloudEvents SDKs read them.
_JSON_TYPE = re.compile(r"(application|text)/([a-z0-9\-.]+\+)?json", re.IGNORECASE)


def to_message(event: SignedEvent, content_mode: ContentMode) -> Message:
    """The key, value and headers of ``event`` in ``content_mode``."""
    key = event.partition_key.encode("utf-8") if event.partition_key else None
    if content_mode == "binary":
        value, headers = binary_message(event.attributes)
        return key, value, headers
    return key, event.body, [("content-type", STRUCTURED_CONTENT_TYPE)]


def binary_message(ce: Mapping[str, Any]) -> tuple[bytes, Headers]:
    """(value, headers) of a CloudEvent in Kafka binary content mode."""
    headers: Headers = []
    for name, value in ce.items():
        if name in ("data", "data_base64") or value is None:
            continue
        if name == "datacontenttype":
            headers.append(("content-type", _header_value(value)))
        else:
            headers.append((f"ce_{name}", _header_value(value)))
    return _value(ce), headers


def _value(ce: Mapping[str, Any]) -> bytes:
    if "data_base64" in ce:
        return base64.b64decode(ce["data_base64"])
    if "data" not in ce:
        return b""
    data = ce["data"]
    if isinstance(data, str) and not is_json_content(ce.get("datacontenttype")):
        return data.encode("utf-8")
    return _json_bytes(data)


def is_json_content(content_type: object) -> bool:
    """True when data of this ``datacontenttype`` is JSON (absent means JSON)."""
    if content_type is None:
        return True
    if not isinstance(content_type, str):
        return False
    return _JSON_TYPE.fullmatch(content_type.split(";", 1)[0].strip()) is not None


def _header_value(value: Any) -> bytes:
    """The CloudEvents canonical string form of an attribute value, UTF-8 encoded."""
    if isinstance(value, bool):
        return b"true" if value else b"false"
    if isinstance(value, str):
        return value.encode("utf-8")
    if isinstance(value, int):
        return str(value).encode("ascii")
    # Not a CloudEvents attribute type; keep it readable rather than fail the batch.
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def _json_bytes(value: Any) -> bytes:
    try:
        return orjson.dumps(value)
    except TypeError:  # integers beyond 64 bits are valid JSON that orjson will not write
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
