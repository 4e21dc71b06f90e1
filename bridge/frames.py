"""Reading one OCPP-J frame: text into a ``Call``, ``CallResult`` or ``CallError``, or a
:class:`FrameError` that says how to answer it.

This replaces the library's ``unpack``, which lets hostile input through in two ways. Some
frames escape it as exceptions nobody translates, so the connection closed with 1011:
a non-string action or unique id (unhashable in a lookup), JSON nested deeper than the
interpreter's recursion limit, an integer of more than 4,300 digits (``int`` refuses to
parse it). Others come out as values that nothing downstream can hold, so a schema-valid
frame was answered InternalError or, worse, published: integers beyond 64 bits (SQLite
and PostgreSQL ``BIGINT`` overflow), numbers that overflow a float (``1e400`` parses as
infinity, which JSON cannot carry), ``NaN`` and ``Infinity`` (not JSON, RFC 8259 section
6, though ``json.loads`` takes them), strings with a lone surrogate (cannot be encoded as
UTF-8) or U+0000 (PostgreSQL text and JSONB refuse it).

Every check that runs on every frame is a C-speed scan of the text (``count``, a regular
expression); the tree is walked only when a scan finds a reason to.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any, TypeAlias

from ocpp.exceptions import (
    FormationViolationError,
    OCPPError,
    PropertyConstraintViolationError,
    ProtocolError,
    TypeConstraintViolationError,
)
from ocpp.messages import Call, CallError, CallResult, MessageType

from bridge.errors import UNREADABLE_ID, FrameError
from chargetwin.json_text import LONG_DIGITS, has_long_digits

# OCPP-J 1.6 section 4.1.3: "UniqueId ... string, maximum of 36 characters".
MAX_UNIQUE_ID = 36
# The deepest OCPP 1.6 message (SetChargingProfile) nests 7 levels with the frame array;
# anything far deeper is hostile, and would exhaust the recursion of the schema checks.
MAX_DEPTH = 32
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1

Message: TypeAlias = Call | CallResult | CallError

# A JSON escape of a surrogate or of U+0000: the only ways such characters get into a
# string (a raw control character is invalid JSON, raw surrogates invalid UTF-8).
_SUSPECT_ESCAPE = re.compile(r"\\u(?:[dD][89a-fA-F]|0000)")
# A JSON string (the text is valid JSON when these run) and a container holding none.
_JSON_STRING = re.compile(r'"(?:[^"\\]|\\.)*"')
_INNERMOST = re.compile(r"[\[{][^\[\]{}]*[\]}]")
# The bytes of a JSON text other than those that open or close a container or a string;
# objects read as arrays (only the depth matters).
_NOT_STRUCTURE = bytes(sorted(set(range(256)) - set(b'[]{}"')))
_AS_SQUARE = bytes.maketrans(b"{}", b"[]")
# The message type and unique id at the start of a frame, for answering a frame whose
# body cannot be used.
_HEADER = re.compile(rf'\s*\[\s*(\d+)\s*(?:,\s*"([^"\\]{{1,{MAX_UNIQUE_ID}}})")?')


class _Unrepresentable(ValueError):
    """A number the bridge cannot carry; raised from inside the JSON decoder."""


def cause_of(error: OCPPError) -> str:
    details = error.details if isinstance(error.details, dict) else {}
    return str(details.get("cause", error.description))


def _finite_float(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise _Unrepresentable(f"number {text[:40]} overflows a double")
    return value


def _bounded_int(text: str) -> int:
    # Checked on the digits first: int() of more than 4,300 digits raises by itself.
    if len(text.lstrip("-")) > 19 or not INT64_MIN <= (value := int(text)) <= INT64_MAX:
        raise _Unrepresentable(f"integer {text[:40]} is outside the signed 64-bit range")
    return value


class _NotJson(ValueError):
    """``NaN``, ``Infinity`` or ``-Infinity``: not JSON (RFC 8259 section 6)."""


def _no_constant(name: str) -> Any:
    raise _NotJson(f"{name} is not a JSON number")


# Decoders built once: json.loads with options builds a new decoder per call.
_DECODER = json.JSONDecoder(parse_float=_finite_float, parse_constant=_no_constant)
_BOUNDED_DECODER = json.JSONDecoder(
    parse_float=_finite_float, parse_int=_bounded_int, parse_constant=_no_constant
)


def parse_frame(raw: str | bytes) -> Message:
    """The message in ``raw``, or :class:`FrameError` with the answer it deserves."""
    if isinstance(raw, bytes):
        # A binary frame: OCPP-J text is UTF-8; json.loads would guess UTF-16 or let
        # encoded surrogates through ("surrogatepass").
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise FrameError(_formation("message is not valid UTF-8")) from None
    else:
        text = raw
    decoder = _BOUNDED_DECODER if _has_long_digits(text) else _DECODER
    try:
        frame = decoder.decode(text)
    except _Unrepresentable as exc:
        cause = {"cause": str(exc)}
        raise _header_error(text, TypeConstraintViolationError(details=cause)) from None
    except _NotJson as exc:
        raise _header_error(text, _formation(str(exc))) from None
    except RecursionError:
        raise _header_error(text, _too_deep()) from None
    except ValueError:
        raise FrameError(_formation("message is not valid JSON")) from None
    # Beyond MAX_DEPTH needs more than MAX_DEPTH opening brackets somewhere in the text; a
    # big frame (an OCPP 2.0.1 NotifyReport part) has that many without nesting deeply.
    deep = text.count("[") + text.count("{") > MAX_DEPTH and _nests_deeper(text)
    suspect = "\\u" in text and _SUSPECT_ESCAPE.search(text) is not None
    if deep or suspect:
        _check_tree(frame, text)
    return _message_of(frame)


def _has_long_digits(text: str) -> bool:
    """:func:`chargetwin.json_text.has_long_digits` of the frame's text."""
    return len(text) >= LONG_DIGITS and has_long_digits(text.encode("utf-8", "surrogatepass"))


def _message_of(frame: Any) -> Message:
    if not isinstance(frame, list):
        raise FrameError(ProtocolError(details={"cause": "message is not a JSON array"}))
    if not frame:
        raise FrameError(ProtocolError(details={"cause": "message has no MessageTypeId"}))
    kind = frame[0]
    # bool is an int in Python; true is not a MessageTypeId.
    if type(kind) is not int or kind not in (2, 3, 4):
        raise FrameError(
            PropertyConstraintViolationError(
                details={"cause": f"MessageTypeId {_short(kind)} isn't valid"}
            ),
            _readable_id(frame),
        )
    if len(frame) < 3:
        expected = 3 if kind == MessageType.CallResult else 4
        raise FrameError(_missing(frame, expected), _readable_id(frame), kind)
    unique_id = frame[1]
    if type(unique_id) is not str:
        raise FrameError(_formation("UniqueId must be a string"), message_type=kind)
    if len(unique_id) > MAX_UNIQUE_ID:
        raise FrameError(
            _formation(f"UniqueId longer than {MAX_UNIQUE_ID} characters"), unique_id, kind
        )
    if kind == MessageType.Call:
        if len(frame) != 4:
            raise FrameError(_missing(frame, 4), unique_id, kind)
        action, payload = frame[2], frame[3]
        if type(action) is not str:
            raise FrameError(_formation("Action must be a string"), unique_id, kind)
        if type(payload) is not dict:
            raise FrameError(
                _formation(f"payload must be a JSON object, got {type(payload).__name__}"),
                unique_id,
                kind,
            )
        return Call(unique_id, action, payload)
    if kind == MessageType.CallResult:
        if len(frame) != 3:
            raise FrameError(_missing(frame, 3), unique_id, kind)
        return CallResult(unique_id, frame[2])
    if len(frame) != 5:
        raise FrameError(_missing(frame, 5), unique_id, kind)
    _, _, code, description, details = frame
    if type(code) is not str or type(description) is not str or type(details) is not dict:
        raise FrameError(
            _formation("CALLERROR needs a string code and description and an object"),
            unique_id,
            kind,
        )
    return CallError(unique_id, code, description, details)


def _nests_deeper(text: str) -> bool:
    """Whether valid JSON ``text`` nests containers more than MAX_DEPTH deep, at C speed.

    Usually its brackets alone (``bytes.translate``) give the depth: when the text holds
    no escape and no string holds a bracket.
    A string holding a bracket leaves a quote behind once the adjacent pairs of quotes
    (the strings without brackets) are removed: the first such string's opening quote ends
    a run of quotes of odd length. Such a text, or one with escapes, takes
    :func:`_nests_deeper_slowly`. (Walking the tree in Python cost a fifth of the CPU of
    an OCPP 2.0.1 boot, the regular expressions of the slow way a tenth.)"""
    data = text.encode("utf-8", "surrogatepass")
    if b"\\" in data:
        return _nests_deeper_slowly(text)
    skeleton = data.translate(_AS_SQUARE, _NOT_STRUCTURE)
    if b'"' in skeleton:
        skeleton = skeleton.replace(b'""', b"")
        if b'"' in skeleton:
            return _nests_deeper_slowly(text)
    # Each pass removes the innermost containers (a "[]" is one, and a replace does not
    # look again at what it joined), so one level: as many passes as the text is deep.
    for _ in range(MAX_DEPTH):
        if not skeleton:
            return False
        skeleton = skeleton.replace(b"[]", b"")
    return bool(skeleton)


def _nests_deeper_slowly(text: str) -> bool:
    """:func:`_nests_deeper` for any text: its strings emptied (they hold no structure),
    the innermost containers are removed MAX_DEPTH times; anything left nests deeper."""
    skeleton = _JSON_STRING.sub("", text) if '"' in text else text
    for _ in range(MAX_DEPTH):
        skeleton, found = _INNERMOST.subn("", skeleton)
        if not found:
            return False
    return "[" in skeleton or "{" in skeleton


def _check_tree(frame: Any, text: str) -> None:
    """Depth and strings of a frame whose text gave a reason to look (iteratively)."""
    stack: list[tuple[Any, int]] = [(frame, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, str):
            if "\x00" in value or not _encodable(value):
                raise _header_error(text, _bad_string())
        elif isinstance(value, (dict, list)):
            if depth > MAX_DEPTH:
                raise _header_error(text, _too_deep())
            if isinstance(value, dict):
                stack.extend((key, depth) for key in value)
                stack.extend((item, depth + 1) for item in value.values())
            else:
                stack.extend((item, depth + 1) for item in value)


def _encodable(value: str) -> bool:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _header_error(text: str, error: OCPPError) -> FrameError:
    """A frame with an unusable body, answered with its own unique id when it has one."""
    header = _HEADER.match(text)
    if header is None:
        return FrameError(error)
    return FrameError(error, header.group(2) or UNREADABLE_ID, int(header.group(1)))


def _readable_id(frame: list[Any]) -> str:
    unique_id = frame[1] if len(frame) > 1 else None
    if type(unique_id) is str and len(unique_id) <= MAX_UNIQUE_ID:
        return unique_id
    return UNREADABLE_ID


def _formation(cause: str) -> OCPPError:
    return FormationViolationError(details={"cause": cause})


def _too_deep() -> OCPPError:
    return _formation(f"message nests deeper than {MAX_DEPTH} levels")


def _bad_string() -> OCPPError:
    return PropertyConstraintViolationError(
        details={"cause": "a string holds a lone surrogate or U+0000"}
    )


def _missing(frame: list[Any], expected: int) -> OCPPError:
    return ProtocolError(
        details={"cause": f"message has {len(frame)} elements where {expected} are due"}
    )


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."
