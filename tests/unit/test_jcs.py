"""RFC 8785 (JCS) canonicalization, against the RFC's own examples and test vectors."""

from __future__ import annotations

import json
import math
import struct
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipeline.signing.jcs import IntegerOutOfRange, JcsError, canonicalize, number

# RFC 8785 Appendix B: IEEE 754 bit patterns and their ECMAScript text.
APPENDIX_B = [
    (0x0000000000000000, "0"),
    (0x8000000000000000, "0"),
    (0x0000000000000001, "5e-324"),
    (0x8000000000000001, "-5e-324"),
    (0x7FEFFFFFFFFFFFFF, "1.7976931348623157e+308"),
    (0xFFEFFFFFFFFFFFFF, "-1.7976931348623157e+308"),
    (0x4340000000000000, "9007199254740992"),
    (0xC340000000000000, "-9007199254740992"),
    (0x4430000000000000, "295147905179352830000"),
    (0x44B52D02C7E14AF5, "9.999999999999997e+22"),
    (0x44B52D02C7E14AF6, "1e+23"),
    (0x44B52D02C7E14AF7, "1.0000000000000001e+23"),
    (0x444B1AE4D6E2EF4E, "999999999999999700000"),
    (0x444B1AE4D6E2EF4F, "999999999999999900000"),
    (0x444B1AE4D6E2EF50, "1e+21"),
    (0x3EB0C6F7A0B5ED8C, "9.999999999999997e-7"),
    (0x3EB0C6F7A0B5ED8D, "0.000001"),
    (0x41B3DE4355555553, "333333333.3333332"),
    (0x41B3DE4355555554, "333333333.33333325"),
    (0x41B3DE4355555555, "333333333.3333333"),
    (0x41B3DE4355555556, "333333333.3333334"),
    (0x41B3DE4355555557, "333333333.33333343"),
    (0xBECBF647612F3696, "-0.0000033333333333333333"),
    (0x43143FF3C1CB0959, "1424953923781206.2"),
]


def from_bits(bits: int) -> float:
    value: float = struct.unpack(">d", struct.pack(">Q", bits))[0]
    return value


@pytest.mark.parametrize(("bits", "text"), APPENDIX_B)
def test_appendix_b_numbers(bits: int, text: str) -> None:
    assert number(from_bits(bits)) == text
    assert canonicalize(from_bits(bits)) == text.encode()


@pytest.mark.parametrize("bits", [0x7FFFFFFFFFFFFFFF, 0x7FF0000000000000, 0xFFF0000000000000])
def test_appendix_b_nan_and_infinity_are_errors(bits: int) -> None:
    with pytest.raises(JcsError):
        canonicalize({"n": from_bits(bits)})


def test_section_3_2_2_example() -> None:
    # RFC 8785 §3.2.2: the input as JSON text, parsed, then canonicalized.
    source = r"""{
      "numbers": [333333333.33333329, 1E30, 4.50, 2e-3, 0.000000000000000000000000001],
      "string": "\u20ac$\u000F\u000aA'\u0042\u0022\u005c\\\"\/",
      "literals": [null, true, false]
    }"""
    expected = ('{"literals":[null,true,false],"numbers":[333333333.3333333,1e+30,4.5,0.002,'
                '1e-27],"string":"€$\\u000f\\nA\'B\\"\\\\\\\\\\"/"}')
    assert canonicalize(json.loads(source)) == expected.encode("utf-8")


def test_section_3_2_3_sorts_by_utf16_code_units() -> None:
    # RFC 8785 §3.2.3: the emoji (a surrogate pair, D83D) sorts before U+FB33, although its
    # code point is larger; sorting by code points would put it last.
    source = {"\u20ac": "Euro Sign", "\r": "Carriage Return", "\ufb33": "Hebrew Letter Dalet",
              "1": "One", "\U0001f600": "Emoji: Grinning Face", "\u0080": "Control",
              "\u00f6": "Latin Small Letter O With Diaeresis"}
    order = list(json.loads(canonicalize(source)))
    assert order == ["\r", "1", "\u0080", "\u00f6", "\u20ac", "\U0001f600", "\ufb33"]
    assert order != sorted(source)


@pytest.mark.parametrize(("value", "text"), [
    (1e-7, "1e-7"), (1e16, "10000000000000000"), (-0.0, "0"), (5e-324, "5e-324"),
    (100.0, "100"), (1.5, "1.5"), (1e21, "1e+21"), (1e20, "100000000000000000000"),
    (0.1 + 0.2, "0.30000000000000004"), (123e-20, "1.23e-18"), (-1.5e-7, "-1.5e-7"),
])
def test_python_float_notations_become_ecmascript_text(value: float, text: str) -> None:
    assert number(value) == text


def test_strings_escape_only_what_jcs_escapes() -> None:
    assert canonicalize("\u2028\x7f\u00e9/\U0001f600") == "\"\u2028\x7f\u00e9/\U0001f600\"".encode()
    assert canonicalize("\b\t\n\f\r\x01\x1f") == b'"\\b\\t\\n\\f\\r\\u0001\\u001f"'


def test_integers_up_to_the_i_json_limit_are_exact() -> None:
    assert canonicalize(2**53 - 1) == b"9007199254740991"
    assert canonicalize(-(2**53) + 1) == b"-9007199254740991"
    assert canonicalize([True, False, None, 0, -7]) == b"[true,false,null,0,-7]"


@pytest.mark.parametrize("big", [2**53, 9007199254740993, -(2**53), -(2**70), 10**20])
def test_integers_beyond_i_json_have_no_canonical_form(big: int) -> None:
    # Was: written as exact digits, which Python rfc8785 refuses and Go gowebpki/jcs rounds
    # (…993 to …992), so no other verifier reproduced the signed bytes.
    with pytest.raises(IntegerOutOfRange):
        canonicalize({"n": big})


@pytest.mark.parametrize("bad", [
    "lone \ud800 surrogate", {"\udfff": 1}, {1: "non-string name"}, {"set": {1, 2}},
    b"bytes", math.nan,
])
def test_values_without_a_canonical_form_are_refused(bad: Any) -> None:
    with pytest.raises(JcsError):
        canonicalize(bad)


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53) + 1, 2**53 - 1)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda children: st.lists(children) | st.dictionaries(st.text(), children),
    max_leaves=30)


def _as_verifier_reads(text: str) -> int | float:
    value = int(text)
    return value if abs(value) < 2**53 else float(value)


@given(JSON_VALUES)
def test_canonical_form_parses_back_to_the_same_value_and_is_a_fixed_point(value: Any) -> None:
    canonical = canonicalize(value)
    # JSON has one number type: an integral double comes back as a Python int, or, beyond
    # the I-JSON integers, as the double it is (as an RFC 8785 verifier reads it).
    parsed = json.loads(canonical, parse_int=_as_verifier_reads)
    assert as_doubles(parsed) == as_doubles(value)
    assert canonicalize(parsed) == canonical


@given(st.floats(allow_nan=False, allow_infinity=False))
def test_every_double_round_trips_through_its_text(value: float) -> None:
    text = number(value)
    assert float(text) == value
    assert "E" not in text
    assert not text.endswith(".0")


def as_doubles(value: Any) -> Any:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, dict):
        return {name: as_doubles(item) for name, item in value.items()}
    if isinstance(value, list):
        return [as_doubles(item) for item in value]
    return value


def test_absurd_nesting_is_a_jcs_error_not_a_crash() -> None:
    deep: Any = []
    for _ in range(5000):
        deep = [deep]
    with pytest.raises(JcsError, match="nested too deeply"):
        canonicalize({"deep": deep})
