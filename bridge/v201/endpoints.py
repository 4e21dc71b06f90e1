"""OCPP-J 2.0.1 framing: the 1.6 endpoint's guarantees, with 2.0.1's error codes and schemas.

Everything :class:`bridge.endpoints.OcppEndpoint` does for 1.6 holds here (every frame
ends in an answer, the connection stays, the charger's bounded error log, one outgoing
call at a time, deliveries confirmed before the answer); what differs:

- **Error codes** (OCPP-J 2.0.1 section 4.2.3): a frame that is not an RPC message at all
  (not JSON, not an array, wrong number of elements, a MessageId that cannot be read) is
  ``RpcFrameworkError``; an unknown MessageTypeId is ``MessageTypeNotSupported``; a payload
  that does not fit its schema is ``FormatViolation``, ``PropertyConstraintViolation``,
  ``OccurrenceConstraintViolation`` or ``TypeConstraintViolation`` as the library decides.
  An action the bridge does not know is ``NotImplemented`` ("Requested Action is not known
  by receiver"); a 2.0.1 action it knows but does not take from a station (one the CSMS
  sends, such as Reset) is ``NotSupported`` ("recognized but not supported"). The library
  answers these two the other way round, so they are decided here before it routes.
- **Schemas**: the 2.0.1 schemas use ``$ref`` definitions, which the 1.6 fast-path compiler
  does not cover. Payloads are checked with validators ``fastjsonschema`` compiles to
  Python from the library's own schema files, once per action; a payload they refuse is
  checked again by the library's own ``jsonschema`` validator of that schema, whose first
  error names the 2.0.1 code (``_SCHEMA_ERRORS``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from functools import cache
from typing import Any, ClassVar

import fastjsonschema
from jsonschema.exceptions import best_match
from ocpp.exceptions import (
    FormationViolationError,
    FormatViolationError,
    NotSupportedError,
    OccurenceConstraintViolationError,
    OccurrenceConstraintViolationError,
    OCPPError,
    PropertyConstraintViolationError,
    ProtocolError,
    TypeConstraintViolationError,
)
from ocpp.exceptions import NotImplementedError as NotImplementedCallError
from ocpp.messages import Call, CallResult, MessageType, get_validator
from ocpp.v201 import call_result as call_result_201
from ocpp.v201.enums import Action

from bridge.endpoints import MAX_CAUSE, OcppEndpoint
from bridge.errors import FrameError
from bridge.frames import cause_of

VERSION = "2.0.1"
OCPP201_ACTIONS = frozenset(a.value for a in Action)
# Connector and EVSE ids the bridge keeps state for (as MAX_CONNECTOR_ID for 1.6).
MAX_EVSE_ID = 255
MAX_CONNECTOR_ID = 255
INT32_MAX = 2**31 - 1

Handler = Callable[[Any, dict[str, Any]], Awaitable[dict[str, Any]]]

# Frame problems bridge.frames reports with a 1.6 code whose 2.0.1 code is RpcFrameworkError:
# the message is not an RPC frame at all, or its MessageId cannot be read.
_NOT_RPC_CAUSES = ("message is not valid", "UniqueId ")


class RpcFrameworkError(OCPPError):  # type: ignore[misc]
    """OCPP-J 2.0.1 section 4.2.3 (the library has no class for it)."""

    code = "RpcFrameworkError"
    default_description = (
        "Content of the call is not a valid RPC Request, for example: MessageId could not be read"
    )


class MessageTypeNotSupportedError(OCPPError):  # type: ignore[misc]
    """OCPP-J 2.0.1 section 4.2.3 (the library has no class for it)."""

    code = "MessageTypeNotSupported"
    default_description = (
        "A message with a Message Type Number received that is not supported by this implementation"
    )


# OCPP-J 2.0.1 section 4.2.3; the library's descriptions of these two are swapped.
NOT_IMPLEMENTED = "Requested Action is not known by receiver"
NOT_SUPPORTED = "Requested Action is recognized but not supported by the receiver"


@cache
def compiled(action: str, message_type: int) -> Callable[[Any], Any]:
    """The fastjsonschema validator of the library's 2.0.1 schema."""
    schema = dict(get_validator(message_type, action, VERSION).schema)
    # The schemas name themselves by URN ($id); their $refs are local ("#/definitions/...").
    schema.pop("$id", None)
    # use_default=False: a check must not write the schemas' defaults into the payload.
    return fastjsonschema.compile(schema, use_default=False)


async def validate201(message: Call | CallResult) -> None:
    """Raise the 2.0.1 OCPPError for a payload that does not fit its 2.0.1 schema."""
    try:
        compiled(message.action, message.message_type_id)(message.payload)
    except fastjsonschema.JsonSchemaException:
        pass
    else:
        return
    try:
        validator = get_validator(message.message_type_id, message.action, VERSION)
    except OSError as exc:  # no schema: not an action of this version
        raise NotImplementedCallError(
            description=NOT_IMPLEMENTED, details={"cause": f"no schema for {message.action:.40}"}
        ) from exc
    error = best_match(validator.iter_errors(message.payload))
    if error is None:
        return  # the compiled check and the library disagree: the library decides
    kind = _SCHEMA_ERRORS.get(str(error.validator), FormatViolationError)
    where = "/".join(str(p) for p in error.absolute_path)
    raise kind(details={"cause": f"{where or 'payload'}: {error.message}"})


# The 2.0.1 code for each failing JSON Schema keyword (OCPP-J 2.0.1 section 4.2.3): a field
# missing or a list of the wrong length is an occurrence, a value outside its enumeration,
# length or range a property, a value of the wrong JSON type a type constraint; a field
# the schema does not have is a format violation. (The library's own mapping answers a
# missing field ProtocolError and a bad enumeration value FormatViolation.)
_SCHEMA_ERRORS: dict[str, type[OCPPError]] = {
    "required": OccurrenceConstraintViolationError,
    "minItems": OccurrenceConstraintViolationError,
    "maxItems": OccurrenceConstraintViolationError,
    "type": TypeConstraintViolationError,
    "enum": PropertyConstraintViolationError,
    "maxLength": PropertyConstraintViolationError,
    "minLength": PropertyConstraintViolationError,
    "minimum": PropertyConstraintViolationError,
    "maximum": PropertyConstraintViolationError,
    "pattern": PropertyConstraintViolationError,
    "additionalProperties": FormatViolationError,
}


def for_ocpp201(error: OCPPError) -> OCPPError:
    """``error`` with the 2.0.1 spelling of its code and a bounded cause."""
    cause = error.details.get("cause") if isinstance(error.details, dict) else None
    details = {"cause": str(cause)[:MAX_CAUSE]} if cause is not None else {}
    kind: type[OCPPError] = type(error)
    if isinstance(error, FormationViolationError):
        kind = FormatViolationError
    elif isinstance(error, OccurenceConstraintViolationError):
        kind = OccurrenceConstraintViolationError
    description = error.description if kind is type(error) else kind.default_description
    return kind(description=description, details=details)


def frame_error_201(error: OCPPError) -> OCPPError:
    """A frame-level error of :mod:`bridge.frames` (1.6 codes) as OCPP-J 2.0.1 answers it:
    not an RPC frame, or no readable MessageId, is RpcFrameworkError; an unknown
    MessageTypeId is MessageTypeNotSupported; the rest keep their (2.0.1-spelled) code."""
    cause = str(error.details.get("cause", "")) if isinstance(error.details, dict) else ""
    kind: type[OCPPError] | None = None
    if isinstance(error, ProtocolError):
        kind = RpcFrameworkError  # not an array, no MessageTypeId, wrong element count
    elif isinstance(error, FormationViolationError) and cause.startswith(_NOT_RPC_CAUSES):
        kind = RpcFrameworkError
    elif isinstance(error, PropertyConstraintViolationError) and cause.startswith("MessageTypeId"):
        kind = MessageTypeNotSupportedError
    if kind is None:
        return for_ocpp201(error)
    return kind(details={"cause": cause[:MAX_CAUSE]})


class Endpoint201(OcppEndpoint):
    """One charging station's OCPP-J 2.0.1 session: inbound routing and outbound calls."""

    _ocpp_version = VERSION
    _call_result = call_result_201
    known_actions: ClassVar[frozenset[str]] = OCPP201_ACTIONS
    # Action -> handler (a plain function taking the endpoint and the camelCase payload and
    # returning the camelCase answer): bridge.v201.handlers fills it.
    handlers: ClassVar[Mapping[str, Handler]] = {}

    def wire_error(self, error: OCPPError) -> OCPPError:
        return for_ocpp201(error)

    async def _refuse_frame(self, error: FrameError, raw: str | bytes, admitted: bool) -> None:
        mapped = FrameError(frame_error_201(error.error), error.unique_id, error.message_type)
        await super()._refuse_frame(mapped, raw, admitted)

    def range_problem(self, action: str, payload: dict[str, Any]) -> OCPPError | None:
        """EVSE and connector ids the bridge keeps state for are bounded (see above)."""
        for name, highest in (("evseId", MAX_EVSE_ID), ("connectorId", MAX_CONNECTOR_ID)):
            value = payload.get(name)
            if type(value) is int and not 0 <= value <= highest:
                cause = f"{name} {value} is outside 0..{highest}"
                return PropertyConstraintViolationError(details={"cause": cause})
        reservation = payload.get("reservationId")
        if type(reservation) is int and not -(2**31) <= reservation <= INT32_MAX:
            # Stored in the same 32-bit column as 1.6 reservation ids (bridge.stores).
            cause = f"reservationId {reservation} is outside the 32-bit range"
            return PropertyConstraintViolationError(details={"cause": cause})
        evse = payload.get("evse")
        if isinstance(evse, dict):
            return self.range_problem(action, {k: evse.get(k) for k in ("id", "connectorId")})
        if type(payload.get("id")) is int and not 0 <= payload["id"] <= MAX_EVSE_ID:
            cause = f"evse id {payload['id']} is outside 0..{MAX_EVSE_ID}"
            return PropertyConstraintViolationError(details={"cause": cause})
        return None

    async def validate(self, message: Call | CallResult) -> None:
        await validate201(message)

    async def _route_call(self, msg: Call) -> None:
        """Range, action and schema checks, then the action's handler. The library's
        routing is not used: it would convert every payload to snake_case and back and
        answer unknown and unsupported actions with each other's code (module docstring)."""
        error: OCPPError | None = self.range_problem(msg.action, msg.payload)
        if error is None and msg.action not in self.handlers:
            if msg.action in OCPP201_ACTIONS:
                error = NotSupportedError(
                    description=NOT_SUPPORTED,
                    details={"cause": f"{msg.action} is not taken from a charging station"},
                )
            else:
                error = NotImplementedCallError(
                    description=NOT_IMPLEMENTED,
                    details={"cause": f"unknown action {msg.action:.40}"},
                )
        if error is None:
            try:
                await self.validate(msg)
            except OCPPError as invalid:
                error = self.wire_error(invalid)
        if error is not None:
            self.errors.error(
                f"{msg.action:.40} {msg.unique_id} answered with {error.code}: {cause_of(error)}"
            )
            await self._send_error(msg.unique_id, error)
            return
        handler = self.handlers[msg.action]
        check = compiled(msg.action, MessageType.CallResult)

        async def answer(endpoint: Any, payload: dict[str, Any]) -> dict[str, Any]:
            result = await handler(endpoint, payload)
            check(result)  # our own defect: answered InternalError, not an invalid frame
            return result

        if await self._route_fast(msg, answer):
            self._run_after_response()
        else:
            self._after_response.clear()
