"""Strict JSON for requests from outside: what every store and every peer can hold again.

Python's ``json`` accepts more than RFC 8259 allows, and each extra is a way in for hostile
input: ``NaN`` and ``Infinity`` (not JSON; PostgreSQL's ``jsonb`` refuses them), numbers that
overflow (``1e999`` becomes ``inf``, a 400-digit integer breaks ``float()``), escaped lone
surrogates (``"\\ud800"``: valid JSON, not encodable as UTF-8, so the document can be
neither stored nor published), and nesting deep enough to exhaust the recursion limit.
:func:`parse_json` refuses all of these with :class:`JsonTextError`, as RFC 7493 (I-JSON)
sections 2.1 and 2.2 ask: UTF-8 text, Unicode strings, numbers that fit a double; integers
also within 64 bits, the largest the SQL stores hold.

:func:`compact` and :func:`sorted_compact` write JSON text the other way, with ``orjson``
(a compiled encoder: the twin spent a quarter of its time in ``json.dumps`` writing
documents to store and publish them). The text is what ``json.dumps`` writes with
``separators=(",", ":")`` and ``ensure_ascii=False`` but for the exponent of small floats
(``1e-7``, not ``1e-07``: the same number); for a value ``orjson`` does not take
(an integer beyond 64 bits, a key that is not a string) they fall back to ``json``.
"""

from __future__ import annotations

import json
import math
from typing import Any

import orjson

__all__ = [
    "MAX_INTEGER",
    "JsonTextError",
    "compact",
    "compact_bytes",
    "has_long_digits",
    "parse_json",
    "sorted_compact",
]

MAX_INTEGER = 2**63 - 1

# A run of 19 digits is the shortest integer that can leave the signed 64-bit range. Found
# by mapping every ASCII digit to "0" and every other byte to " " (bytes.translate): a
# regular expression scanning for it cost a third of the reading of a 2.0.1 NotifyReport.
LONG_DIGITS = 19
_DIGITS_AS_ZERO = bytes(48 if 48 <= c <= 57 else 32 for c in range(256))
# orjson reads nesting deeper than what walks a value afterwards can recurse: the fast
# reading is for texts that open fewer containers than this (so cannot nest deeper).
_FAST_OPENINGS = 256


class JsonTextError(ValueError):
    """Text that is not strict JSON; the message says why, for a 400 answer."""


def _no_constant(name: str) -> Any:
    raise JsonTextError(f"{name} is not a JSON number")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise JsonTextError(f"number {text[:40]} is out of range")
    return value


def _bounded_int(text: str) -> int:
    # Digits first: int() of a very long text is slow and refused beyond 4300 digits anyway.
    if len(text.lstrip("-")) > 19 or abs(value := int(text)) > MAX_INTEGER:
        raise JsonTextError(f"integer {text[:40]}... is beyond 64 bits")
    return value


_DECODER = json.JSONDecoder(
    parse_float=_finite_float, parse_int=_bounded_int, parse_constant=_no_constant
)


def has_long_digits(data: bytes) -> bool:
    """Whether ``data`` holds a run of :data:`LONG_DIGITS` ASCII digits (only those make a
    JSON number; another script's digits can only be in a string)."""
    return len(data) >= LONG_DIGITS and b"0" * LONG_DIGITS in data.translate(_DIGITS_AS_ZERO)


def parse_json(data: bytes | str) -> Any:
    """The value of strict JSON text, or :class:`JsonTextError` saying what is wrong.

    orjson reads it when it cannot hold what orjson reads differently (an integer beyond
    64 bits becomes a float there; nesting deeper than later walks recurse): it refuses
    everything else strict JSON refuses (NaN, Infinity, 1e999, lone surrogates, invalid
    UTF-8) and then the strict reading below says why. Several times faster on every
    shadow update, MQTT message and request body."""
    raw = data if isinstance(data, bytes) else data.encode("utf-8", "surrogatepass")
    if raw.count(b"[") + raw.count(b"{") < _FAST_OPENINGS and not has_long_digits(raw):
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError:
            pass
    try:
        text = data.decode("utf-8") if isinstance(data, bytes) else data
        value = _DECODER.decode(text)
    except JsonTextError:
        raise
    except UnicodeDecodeError as exc:
        raise JsonTextError(f"not UTF-8: {exc.reason} at byte {exc.start}") from exc
    except RecursionError as exc:
        raise JsonTextError("nested too deep") from exc
    except ValueError as exc:
        raise JsonTextError(str(exc)) from exc
    try:
        # Every string, key or value, must be Unicode text: escaped lone surrogates are not.
        json.dumps(value, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError as exc:
        raise JsonTextError("a string holds a lone surrogate (not Unicode text)") from exc
    except RecursionError as exc:
        raise JsonTextError("nested too deep") from exc
    return value


def compact_bytes(value: Any) -> bytes:
    """Compact UTF-8 JSON of ``value`` (as ``json.dumps(..., separators=(",", ":"),
    ensure_ascii=False).encode()``)."""
    try:
        return orjson.dumps(value)
    except TypeError:  # orjson.JSONEncodeError: beyond 64 bits, non-string keys, ...
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


def compact(value: Any) -> str:
    """:func:`compact_bytes` as text."""
    return compact_bytes(value).decode()


def sorted_compact(value: Any) -> str:
    """Compact JSON with every object's keys sorted: one text per value, for comparing."""
    try:
        return orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode()
    except TypeError:
        return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
