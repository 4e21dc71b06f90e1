"""OCPP-J 1.6 framing on top of ``ocpp.v16.ChargePoint``: errors answered, calls correlated.

The library routes calls to ``@on`` handlers and validates payloads against the 1.6 JSON
schemas. This class changes three things it does differently from what we need:

- A frame that cannot be unpacked (not JSON, not an OCPP array) is only logged by the
  library; we answer it with a CALLERROR (OCPP-J 1.6 section 4.2.3) so the charger learns
  why, using the frame's unique id when it can be read and ``"-1"`` otherwise (the
  convention OCPP-J 2.0.1 section 4.2.3 made explicit). The connection stays open.
- Error codes use the 1.6 spellings: ``FormationViolation`` and
  ``OccurenceConstraintViolation`` (OCPP-J 1.6 section 4.2.3, kept by its errata), where the
  library raises the 2.0.1 ``FormatViolation``.
- Outgoing calls use one map of futures keyed by unique id, cleaned up in ``finally``, and
  raise :mod:`bridge.errors` exceptions; the library's response queue would hand a late
  answer to the next call. One call is outstanding at a time (OCPP-J 1.6 section 4.1.1).
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections.abc import Callable
from typing import Any

from ocpp.exceptions import (
    FormationViolationError,
    FormatViolationError,
    GenericError,
    OccurenceConstraintViolationError,
    OccurrenceConstraintViolationError,
    OCPPError,
)
from ocpp.messages import Call, CallError, CallResult, MessageType, unpack, validate_payload
from ocpp.v16 import ChargePoint
from websockets.exceptions import ConnectionClosed

from bridge.errors import (
    CallErrorReceived,
    CallTimeoutError,
    ChargerGoneError,
    InvalidCallError,
    InvalidResponseError,
)

log = logging.getLogger(__name__)

UNREADABLE_ID = "-1"


def unique_id_of(raw: str | bytes) -> str:
    """The unique id of a frame that failed to unpack, or ``"-1"`` when it has none."""
    try:
        frame = json.loads(raw)
    except (ValueError, TypeError):
        return UNREADABLE_ID
    if isinstance(frame, list) and len(frame) > 1 and isinstance(frame[1], str):
        return frame[1]
    return UNREADABLE_ID


def for_ocpp16(error: OCPPError) -> OCPPError:
    """The same error with the error code spelled as OCPP-J 1.6 section 4.2.3 spells it."""
    cause = error.details.get("cause") if isinstance(error.details, dict) else None
    details = {"cause": str(cause)} if cause is not None else {}
    if isinstance(error, FormatViolationError):
        return FormationViolationError(description=error.description, details=details)
    if isinstance(error, OccurrenceConstraintViolationError):
        return OccurenceConstraintViolationError(description=error.description, details=details)
    return type(error)(description=error.description, details=details)


class OcppEndpoint(ChargePoint):  # type: ignore[misc]  # ocpp ships no type information
    """One charger's OCPP-J 1.6 session: inbound routing and outbound calls."""

    def __init__(self, charger_id: str, connection: Any, *, call_timeout: float = 30.0) -> None:
        super().__init__(charger_id, connection, response_timeout=call_timeout)
        self.charger_id = charger_id
        self.call_timeout = call_timeout
        self._pending: dict[str, asyncio.Future[CallResult | CallError]] = {}
        self._outgoing_lock = asyncio.Lock()
        # Work that must start only once the CALLRESULT is on the wire (e.g. GetConfiguration
        # after BootNotification), queued by handlers and run by route_message.
        self._after_response: list[Callable[[], None]] = []

    # --- inbound -------------------------------------------------------------------------
    async def route_message(self, raw_msg: str | bytes, admitted: bool = True) -> None:
        """Handle one frame; ``admitted`` False means over the flood limit."""
        try:
            msg = unpack(raw_msg)
        except OCPPError as error:
            if not admitted:
                return  # a flood of garbage gets no answers
            unique_id = unique_id_of(raw_msg)
            log.warning(
                "%s: unreadable frame answered with %s: %.200r",
                self.charger_id,
                error.code,
                raw_msg,
            )
            await self._send_error(unique_id, for_ocpp16(error))
            return

        if msg.message_type_id == MessageType.Call:
            if not admitted:
                await self._send_error(
                    msg.unique_id,
                    GenericError(description="rate limit", details={"cause": "too many messages"}),
                )
                return
            await self._route_call(msg)
        elif msg.message_type_id in (MessageType.CallResult, MessageType.CallError):
            future = self._pending.get(msg.unique_id)
            if future is None or future.done():
                log.warning(
                    "%s: answer to an unknown or expired call %s ignored",
                    self.charger_id,
                    msg.unique_id,
                )
            else:
                future.set_result(msg)

    async def _route_call(self, msg: Call) -> None:
        if not isinstance(msg.payload, dict):
            # The library would pass a non-object payload to the handler as keywords.
            error: OCPPError = FormationViolationError(
                description="payload must be a JSON object",
                details={"cause": f"got {type(msg.payload).__name__}"},
            )
            await self._send_error(msg.unique_id, error)
            return
        try:
            await self._handle_call(msg)
        except OCPPError as error:
            log.warning(
                "%s: %s %s answered with %s: %s",
                self.charger_id,
                msg.action,
                msg.unique_id,
                error.code,
                error.details.get("cause", error.description),
            )
            await self._send_error(msg.unique_id, for_ocpp16(error))
            self._after_response.clear()
            return
        hooks, self._after_response = self._after_response, []
        for hook in hooks:
            hook()

    async def _send_error(self, unique_id: str, error: OCPPError) -> None:
        frame = CallError(unique_id, error.code, error.description, error.details)
        await self._send(frame.to_json())

    # --- outbound ------------------------------------------------------------------------
    async def request(
        self,
        action: str,
        payload: dict[str, Any],
        timeout: float | None = None,
        *,
        include_wait: bool = False,
    ) -> dict[str, Any]:
        """Send a CALL with a camelCase ``payload`` and return the camelCase answer.

        Raises the :mod:`bridge.errors` tree: invalid request 400, timeout or disconnect
        504, CALLERROR or invalid answer 502. ``timeout`` counts from sending the call, or
        from now with ``include_wait`` (an operator waiting for a command's result).
        """
        call = Call(unique_id=str(uuid.uuid4()), action=action, payload=payload)
        try:
            await validate_payload(call, self._ocpp_version)
        except OCPPError as error:
            cause = error.details.get("cause", error.description)
            raise InvalidCallError(f"{action}: {error.code}: {cause}") from error
        limit = self.call_timeout if timeout is None else timeout
        try:
            if include_wait:
                async with asyncio.timeout(limit):
                    answer = await self._exchange(call, None)
            else:
                answer = await self._exchange(call, limit)
        except TimeoutError as exc:
            raise CallTimeoutError(f"{action}: no answer within {limit:g} s") from exc
        except ConnectionClosed as exc:
            raise ChargerGoneError(f"{action}: connection closed") from exc

        if isinstance(answer, CallError):
            raise CallErrorReceived(
                str(answer.error_code), str(answer.error_description), answer.error_details
            )
        answer.action = action
        try:
            await validate_payload(answer, self._ocpp_version)
        except OCPPError as error:
            cause = error.details.get("cause", error.description)
            raise InvalidResponseError(f"{action}: invalid answer: {cause}") from error
        result = answer.payload
        return result if isinstance(result, dict) else {}

    async def _exchange(self, call: Call, timeout: float | None) -> CallResult | CallError:
        """Send ``call`` once it is our turn and wait for its answer."""
        future: asyncio.Future[CallResult | CallError] = asyncio.get_running_loop().create_future()
        async with self._outgoing_lock:
            self._pending[call.unique_id] = future
            try:
                await self._send(call.to_json())
                async with asyncio.timeout(timeout):
                    return await future
            finally:
                self._pending.pop(call.unique_id, None)

    def fail_pending(self) -> None:
        """The connection is gone: every waiting call fails now rather than at its timeout."""
        for unique_id, future in list(self._pending.items()):
            if not future.done():
                future.set_exception(ChargerGoneError(f"connection closed ({unique_id})"))
