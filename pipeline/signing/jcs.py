"""RFC 8785 JSON Canonicalization Scheme (JCS): the bytes Ed25519 signatures cover.

JCS output is what any language's JCS library produces for the same JSON value, so an
auditor can verify a govpipe signature without Python:
- object members sorted by the UTF-16 code units of their names, no whitespace;
- strings with only `"`, `\\` and control characters escaped, everything else raw UTF-8;
- numbers as ECMAScript `Number.prototype.toString` writes an IEEE 754 double.

Values JCS cannot represent raise `JcsError` rather than being signed in a form another
verifier would not reproduce: NaN/Infinity, lone surrogates, non-string member names,
non-JSON types.

RFC 8785 only defines numbers a double holds, so integers beyond ±(2**53 - 1) (outside
I-JSON) raise `IntegerOutOfRange`: written as exact digits, conforming libraries refuse them
(Python rfc8785) or round them (Go gowebpki/jcs turns 2**53 + 1 into 2**53) and the signature
fails; rounded here, the signature would bind a value the producer never sent. Such an event
is refused with a reason instead (see README, "Numbers").
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

# json's encoder escapes exactly what JCS escapes when ensure_ascii is off: `"`, `\`,
# \b \t \n \f \r, other control characters as lowercase \u00xx; nothing else.
_encode_string = json.encoder.encode_basestring


# The largest integer magnitude a double holds exactly (I-JSON, RFC 7493 section 2.2).
MAX_SAFE_INTEGER = 2**53 - 1


class JcsError(ValueError):
    """The value has no RFC 8785 canonical form (not I-JSON)."""


class IntegerOutOfRange(JcsError):
    """An integer beyond ±(2**53 - 1), which no conforming RFC 8785 library reproduces."""


def canonicalize(value: Any) -> bytes:
    """The RFC 8785 canonical UTF-8 bytes of a JSON value (dict, list, str, number, bool, None)."""
    parts: list[str] = []
    try:
        _write(value, parts)
    except RecursionError:
        raise JcsError("nested too deeply to canonicalize") from None
    text = "".join(parts)
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        raise JcsError("a string contains a lone surrogate (not I-JSON)") from None


def _write(value: Any, parts: list[str]) -> None:
    # Checked in order of frequency in governance events; bool before int (a subclass).
    if isinstance(value, str):
        parts.append(_encode_string(value))
    elif isinstance(value, Mapping):
        _write_object(value, parts)
    elif value is None:
        parts.append("null")
    elif value is True:
        parts.append("true")
    elif value is False:
        parts.append("false")
    elif isinstance(value, int):
        if not -MAX_SAFE_INTEGER <= value <= MAX_SAFE_INTEGER:
            raise IntegerOutOfRange(f"integer of {len(str(abs(value)))} digits is beyond "
                                    "±(2**53 - 1), outside I-JSON")
        parts.append(str(value))  # ECMAScript's text for an integral double this small
    elif isinstance(value, float):
        parts.append(number(value))
    elif isinstance(value, list | tuple):
        _write_array(value, parts)
    else:
        raise JcsError(f"{type(value).__name__} is not a JSON value")


def _write_object(obj: Mapping[Any, Any], parts: list[str]) -> None:
    for name in obj:
        if not isinstance(name, str):
            raise JcsError(f"object member name {type(name).__name__} is not a string")
    parts.append("{")
    for index, name in enumerate(sorted(obj, key=_utf16_key)):
        if index:
            parts.append(",")
        parts.append(_encode_string(name))
        parts.append(":")
        _write(obj[name], parts)
    parts.append("}")


def _write_array(items: list[Any] | tuple[Any, ...], parts: list[str]) -> None:
    parts.append("[")
    for index, item in enumerate(items):
        if index:
            parts.append(",")
        _write(item, parts)
    parts.append("]")


def _utf16_key(name: str) -> bytes:
    # Big-endian UTF-16 bytes compare like the code-unit sequences RFC 8785 §3.2.3 sorts by
    # (astral characters, as surrogates, sort before U+E000-U+FFFF, unlike code points).
    # surrogatepass: a lone surrogate still sorts; encoding the output refuses it later.
    return name.encode("utf-16-be", "surrogatepass")


def number(value: float) -> str:
    """ECMAScript Number::toString of a finite double (RFC 8785 §3.2.2.3)."""
    if not math.isfinite(value):
        raise JcsError("NaN and Infinity are not JSON numbers")
    if value == 0:
        return "0"  # -0 too
    # repr() gives the shortest digit string that round-trips, as ECMAScript requires;
    # only the layout (where the point goes, when to use an exponent) differs.
    sign = "-" if value < 0 else ""
    digits, point = _shortest_digits(abs(value))
    return sign + _layout(digits, point)


def _shortest_digits(value: float) -> tuple[str, int]:
    """(s, n) with value = 0.s * 10**n, s without leading or trailing zeros."""
    mantissa, _, exponent = repr(value).partition("e")
    whole, _, fraction = mantissa.partition(".")
    digits = (whole + fraction).lstrip("0")
    leading_zeros = len(whole + fraction) - len(digits)
    point = len(whole) - leading_zeros + (int(exponent) if exponent else 0)
    return digits.rstrip("0"), point


def _layout(digits: str, n: int) -> str:
    k = len(digits)
    if k <= n <= 21:
        return digits + "0" * (n - k)
    if 0 < n <= 21:
        return digits[:n] + "." + digits[n:]
    if -6 < n <= 0:
        return "0." + "0" * -n + digits
    exponent = f"e{'+' if n - 1 >= 0 else '-'}{abs(n - 1)}"
    if k == 1:
        return digits + exponent
    return digits[0] + "." + digits[1:] + exponent
