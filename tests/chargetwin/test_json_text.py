"""Strict JSON: what Python's json accepts beyond RFC 8259 and I-JSON is refused."""

from __future__ import annotations

import pytest

from chargetwin.json_text import JsonTextError, parse_json


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
