"""Parsing and checking shadow requests before they touch a document.

Everything here is pure: a request either becomes an :class:`UpdateRequest` or raises
:class:`ShadowError` with the code the ``rejected`` topic carries (AWS IoT codes: 400 bad
request, 404 no such charger, 408 the request's ``deadline`` passed before it could be
applied (not applied), 409 version conflict, 413 too large, 422 invalid desired state,
500 internal).

Exception tree::

    ShadowError(code, message, client_token)
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
from dataclasses import dataclass
from typing import Any

from chargetwin.json_text import JsonTextError, parse_json
from twin.documents import SECTIONS, depth_of

_REQUEST_KEYS = frozenset({"state", "version", "clientToken", "timestamp", "deadline"})
_MAX_TOKEN_LENGTH = 64
# A source clock may run a little ahead of ours; more than this is a broken clock, and
# accepting it would freeze the leaf against every later correct write.
MAX_CLOCK_SKEW = 300.0


class ShadowError(Exception):
    """A request the twin refuses; ``code`` and ``message`` go out on ``rejected``."""

    def __init__(self, code: int, message: str, client_token: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.client_token = client_token

    def payload(self, timestamp: float) -> dict[str, Any]:
        body: dict[str, Any] = {"code": self.code, "message": self.message, "timestamp": timestamp}
        if self.client_token is not None:
            body["clientToken"] = self.client_token
        return body


@dataclass(frozen=True, slots=True)
class Limits:
    max_request_bytes: int = 128 * 1024
    max_document_bytes: int = 64 * 1024
    max_depth: int = 8


@dataclass(frozen=True, slots=True)
class UpdateRequest:
    state: dict[str, dict[str, Any] | None]
    version: int | None
    client_token: str | None
    timestamp: float
    # Epoch seconds after which the request must not be applied (the requester gave up).
    deadline: float | None = None
    # The request's identity when it has a clientToken (a digest of its bytes): the same
    # request delivered twice is recognised (ShadowDocument.remember_request).
    fingerprint: str | None = None


def parse_json_object(payload: bytes, limits: Limits) -> dict[str, Any]:
    if len(payload) > limits.max_request_bytes:
        raise ShadowError(
            413, f"payload of {len(payload)} bytes exceeds {limits.max_request_bytes} bytes"
        )
    if not payload.strip():
        return {}
    try:
        body = parse_json(payload)
    except JsonTextError as exc:
        raise ShadowError(400, f"payload is not valid JSON: {exc}") from exc
    if not isinstance(body, dict):
        raise ShadowError(400, "payload must be a JSON object")
    return body


def client_token_of(body: dict[str, Any]) -> str | None:
    token = body.get("clientToken")
    if token is None:
        return None
    if not isinstance(token, str) or len(token) > _MAX_TOKEN_LENGTH:
        raise ShadowError(
            400, f"clientToken must be a string of at most {_MAX_TOKEN_LENGTH} characters"
        )
    return token


def parse_update(payload: bytes, limits: Limits, now: float) -> UpdateRequest:
    body = parse_json_object(payload, limits)
    token = client_token_of(body)
    try:
        request = _check_update(body, token, limits, now)
    except ShadowError as exc:
        exc.client_token = token
        raise
    if token is None:
        return request
    fingerprint = hashlib.blake2b(payload, digest_size=12).hexdigest()
    return dataclasses.replace(request, fingerprint=fingerprint)


def _check_update(
    body: dict[str, Any], token: str | None, limits: Limits, now: float
) -> UpdateRequest:
    unknown = set(body) - _REQUEST_KEYS
    if unknown:
        raise ShadowError(400, f"unknown field(s): {', '.join(sorted(unknown))}")
    state = body.get("state")
    if not isinstance(state, dict):
        raise ShadowError(400, "'state' must be an object with 'reported' and/or 'desired'")
    wrong = set(state) - set(SECTIONS)
    if wrong:
        raise ShadowError(
            400, f"state may only hold 'reported' and 'desired', not {', '.join(sorted(wrong))}"
        )
    for name, section in state.items():
        if section is not None and not isinstance(section, dict):
            raise ShadowError(400, f"state.{name} must be an object or null")
        if section is not None and depth_of(section) > limits.max_depth:
            raise ShadowError(400, f"state.{name} is nested deeper than {limits.max_depth} levels")
    version = body.get("version")
    if version is not None and (
        isinstance(version, bool) or not isinstance(version, int) or version < 0
    ):
        raise ShadowError(400, "'version' must be a non-negative integer")
    timestamp = body.get("timestamp", now)
    if (
        isinstance(timestamp, bool)
        or not isinstance(timestamp, int | float)
        or not (math.isfinite(timestamp) and timestamp > 0)
    ):
        raise ShadowError(400, "'timestamp' must be a positive number of epoch seconds")
    if timestamp > now + MAX_CLOCK_SKEW:
        raise ShadowError(400, f"'timestamp' is more than {MAX_CLOCK_SKEW:g} s in the future")
    deadline = body.get("deadline")
    if deadline is not None and (
        isinstance(deadline, bool)
        or not isinstance(deadline, int | float)
        or not (math.isfinite(deadline) and deadline > 0)
    ):
        raise ShadowError(400, "'deadline' must be a positive number of epoch seconds")
    return UpdateRequest(
        state=state,
        version=version,
        client_token=token,
        timestamp=float(timestamp),
        deadline=None if deadline is None else float(deadline),
    )


def request_metadata(state: dict[str, Any], timestamp: float) -> dict[str, Any]:
    """The metadata an ``accepted`` answer carries: one timestamp per written leaf."""
    out: dict[str, Any] = {}
    for key, value in state.items():
        if isinstance(value, dict) and value:
            out[key] = request_metadata(value, timestamp)
        else:
            out[key] = {"timestamp": timestamp}
    return out
