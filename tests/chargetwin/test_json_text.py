"""Strict JSON: what Python's json accepts beyond RFC 8259 and I-JSON is refused."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chargetwin.json_text import (
    _DECODER,
    JsonTextError,
    compact,
    compact_bytes,
    parse_json,
    sorted_compact,
)


@pytest.mark.parametrize(
    "text",
    [
        b'{"a": 1, "b": [1.5, -2, "x", null, true], "c": {"d": "\\u00e9\\ud83d\\ude00"}}',
        b"9223372036854775807",
        b"-9223372036854775807",
        b"1e308",
        b'"\\u0000"',
        "[1]",
    ],
)
def test_strict_json_parses(text: bytes | str) -> None:
    parse_json(text)


@pytest.mark.parametrize(
    ("text", "why"),
    [
        (b"NaN", "NaN"),
        (b"[-Infinity]", "Infinity"),
        (b"1e999", "out of range"),
        (b"9223372036854775808", "64 bits"),
        (b"-" + b"9" * 5000, "64 bits"),
        (b'"\\ud800"', "lone surrogate"),
        (b'{"\\udc00": 1}', "lone surrogate"),
        (b'"\xff"', "UTF-8"),
        (b"[" * 100_000 + b"]" * 100_000, "nested too deep"),
        (b"{", "Expecting"),
        (b"", "Expecting"),
    ],
)
def test_what_is_not_strict_json_is_refused_with_the_reason(text: bytes, why: str) -> None:
    with pytest.raises(JsonTextError, match=why):
        parse_json(text)


# --- writing: compact(), sorted_compact(), compact_bytes() -----------------------------------


def test_compact_writes_what_json_dumps_writes_for_documents() -> None:
    value = {"b": [1.5, 2e20, 0.1, -0.0, 3.0, None, True], "a": 'é\u2028\x00"\\/', "c": {}}
    expected = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    assert compact(value) == expected
    assert compact_bytes(value) == expected.encode()
    assert json.loads(compact(1e-7)) == 1e-7  # "1e-7", not "1e-07": the same number


def test_values_orjson_refuses_fall_back_to_json() -> None:
    assert compact({"big": 2**70}) == '{"big":1180591620717411303424}'
    assert compact({1: "x"}) == '{"1":"x"}'
    assert sorted_compact({"n": -(2**70)}) == '{"n":-1180591620717411303424}'


def test_sorted_compact_is_one_text_per_value() -> None:
    assert sorted_compact({"b": 1, "a": {"d": 2, "c": 3}}) == '{"a":{"c":3,"d":2},"b":1}'
    assert sorted_compact({"a": {"c": 3, "d": 2}, "b": 1}) == sorted_compact(
        {"b": 1, "a": {"d": 2, "c": 3}}
    )


VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**64), 2**64)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=4), children, max_size=4)
    ),
    max_leaves=20,
)


@settings(max_examples=500, deadline=None)
@given(VALUES, st.booleans())
def test_the_fast_reading_agrees_with_the_strict_one(value: object, ascii_only: bool) -> None:
    """orjson reads most texts (chargetwin.json_text.parse_json): what it returns, or
    refuses, is what the strict reading returns or refuses, numbers and strings alike."""
    text = json.dumps(value, ensure_ascii=ascii_only).encode("utf-8", "surrogatepass")
    try:
        strict: object = ("value", _strict(text))
    except (JsonTextError, ValueError):
        strict = "refused"
    try:
        fast: object = ("value", parse_json(text))
    except JsonTextError:
        fast = "refused"
    assert fast == strict
    if fast != "refused":
        assert json.dumps(fast[1]) == json.dumps(strict[1])  # type: ignore[index]


def _strict(text: bytes) -> object:
    value = _DECODER.decode(text.decode("utf-8"))
    json.dumps(value, ensure_ascii=False).encode("utf-8")  # lone surrogates refused
    return value
