"""The CloudEvents 1.0 rules for attribute names and values, checked before anything is signed.

An input that breaks them is refused (`InvalidEvent`, reason `invalid_cloudevent`) and never
repaired: a renamed or re-typed attribute would no longer be what its producer sent, and an
event the SDKs refuse is one a consumer drops after govpipe has counted it delivered.

Names: lower-case ASCII letters and digits, 1 to 20 characters. The spec makes 20 a SHOULD
(names must fit every protocol binding); the SDKs read longer names (sdk-go v2.16 and
cloudevents 2.2 were tried), but govpipe refuses them: a warning in a log does not travel
with the event, output valid under the strictest reading is what every consumer accepts,
and every name govpipe adds (`agt*`, `partitionkey`...) fits.

Values, by the CloudEvents type system:
- `specversion` "1.0"; `id`, `type` non-empty Strings; `source` a non-empty URI-reference;
- `subject` a non-empty String; `datacontenttype` an RFC 2046 media type (`type/subtype`);
  `dataschema` an absolute URI; `time` an RFC 3339 timestamp (checked by the caller, whose
  rejection reason is `bad_timestamp`);
- extensions a String, a Boolean or an Integer (signed 32 bits); never null, a double, an
  object or an array (the JSON format has no other attribute types);
- Strings hold no control characters (U+0000-U+001F, U+007F-U+009F), as the spec requires.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from pipeline.cloudevents.errors import InvalidEvent

INVALID = "invalid_cloudevent"
MAX_NAME_LENGTH = 20
INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1
# Members of the structured JSON form that are not attributes.
DATA_MEMBERS = ("data", "data_base64")

_NAME = re.compile(rf"[a-z0-9]{{1,{MAX_NAME_LENGTH}}}")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_MEDIA_TYPE = re.compile(r"[A-Za-z0-9!#$&^_.+-]+/[A-Za-z0-9!#$&^_.+-]+\s*(;.*)?", re.DOTALL)
# RFC 3986: the characters a URI-reference may hold, and what a scheme looks like.
_URI_CHARS = re.compile(r"(?:[A-Za-z0-9\-._~:/?#\[\]@!$&'()*+,;=]|%[0-9A-Fa-f]{2})*")
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*:")
CONTEXT_ATTRIBUTES = frozenset(("specversion", "id", "source", "type", "subject", "time",
                      "datacontenttype", "dataschema"))


# Names every event carries: a set lookup settles them without the regex (this runs for
# every attribute of every event).
_COMMON_NAMES = frozenset(("specversion", "id", "source", "type", "subject", "time",
                           "datacontenttype", "dataschema", "schemaversion", "sessionid",
                           "traceid", "spanid", "parentspanid", "partitionkey", "agtalerts",
                           "agtsignature", "agtsignaturealg", "agtkeyid"))


# Valid names whose only rule for a string value is "no control character" (and, for the
# context attributes among them, "non-empty"); `specversion` and `time` are the caller's.
_PLAIN_STRING_NAMES = _COMMON_NAMES - {"source", "datacontenttype", "dataschema"}


def is_valid_attribute_name(name: str) -> bool:
    """True when `name` may name a CloudEvents attribute (lower-case a-z, 0-9, 1-20 long)."""
    return name in _COMMON_NAMES or _NAME.fullmatch(name) is not None


def check_attribute_name(name: str) -> None:
    """Raise `InvalidEvent` unless `name` is a valid CloudEvents attribute name."""
    if not is_valid_attribute_name(name):
        raise InvalidEvent(
            INVALID, f"attribute name {name[:40]!r} is not 1-{MAX_NAME_LENGTH} characters "
            "of lower-case a-z and 0-9 (CloudEvents attribute naming)")


def check_attributes(event: Mapping[str, Any]) -> None:
    """Raise `InvalidEvent` unless every attribute of a structured CloudEvent (specversion
    already checked, `time` left to the caller) has a valid name and value."""
    for name, value in event.items():
        if name in DATA_MEMBERS:
            continue
        # Almost every attribute is a known name holding printable, non-empty text: passed
        # here in one step (the checks below accept it too), not four calls per attribute.
        if name in _PLAIN_STRING_NAMES and type(value) is str and value and value.isprintable():
            continue
        check_attribute_name(name)
        _check_value(name, value)


def _check_value(name: str, value: Any) -> None:
    if name in ("specversion", "time"):
        return
    if name in CONTEXT_ATTRIBUTES:
        _check_string(name, value, non_empty=True)
        _check_format(name, value)
    else:
        _check_extension(name, value)


def _check_format(name: str, value: str) -> None:
    if name == "source" and not is_uri_reference(value):
        raise InvalidEvent(INVALID, "source is not a URI-reference")
    if name == "dataschema" and not (is_uri_reference(value) and _SCHEME.match(value)):
        raise InvalidEvent(INVALID, "dataschema is not an absolute URI")
    if name == "datacontenttype" and not _MEDIA_TYPE.fullmatch(value):
        raise InvalidEvent(INVALID, "datacontenttype is not a media type (type/subtype)")


def _check_string(name: str, value: Any, *, non_empty: bool) -> None:
    if not isinstance(value, str) or (non_empty and not value):
        raise InvalidEvent(INVALID, f"attribute {name} must be a non-empty string")
    # Printable text holds no control character; isprintable is one C loop, and only the
    # rare other non-printable text (line separators, format characters) needs the regex.
    if not value.isprintable() and _CONTROL.search(value):
        raise InvalidEvent(INVALID, f"attribute {name} holds a control character")


def _check_extension(name: str, value: Any) -> None:
    if isinstance(value, bool):
        return
    if isinstance(value, int):
        if not INT32_MIN <= value <= INT32_MAX:
            raise InvalidEvent(INVALID, f"attribute {name} is outside the 32-bit Integer range")
        return
    if isinstance(value, str):
        _check_string(name, value, non_empty=False)
        return
    kind = "null" if value is None else type(value).__name__
    raise InvalidEvent(INVALID, f"attribute {name} is {kind}, not a String, Boolean or Integer")


def is_uri_reference(value: str) -> bool:
    """True for a non-empty RFC 3986 URI-reference (ASCII, escapes well formed)."""
    if not value or _URI_CHARS.fullmatch(value) is None:
        return False
    head = value.split("/", 1)[0]
    # A colon before the first slash makes a scheme, which must be well formed.
    return ":" not in head or _SCHEME.match(head) is not None
