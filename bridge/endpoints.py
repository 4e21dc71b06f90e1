"""OCPP-J 1.6 framing on top of ``ocpp.v16.ChargePoint``: errors answered, calls correlated.

The library routes calls to ``@on`` handlers and validates payloads against the 1.6 JSON
schemas. This class changes three things it does differently from what we need:

- Frames are read by :func:`bridge.frames.parse_frame`, not the library's ``unpack``
  (which lets non-string ids and actions, deep nesting and unrepresentable values through
  as exceptions or as values no store holds). A frame that cannot be used is only logged
  by the library; we answer it with a CALLERROR (OCPP-J 1.6 section 4.2.3) so the charger
  learns why, using the frame's unique id when it can be read and ``"-1"`` otherwise (the
  convention OCPP-J 2.0.1 section 4.2.3 made explicit). The connection stays open, and
  the error goes to the charger's bounded log (:mod:`bridge.errorlog`), never a traceback.
- Error codes use the 1.6 spellings: ``FormationViolation`` and
  ``OccurenceConstraintViolation`` (OCPP-J 1.6 section 4.2.3, kept by its errata), where the
  library raises the 2.0.1 ``FormatViolation``.
- Outgoing calls use one map of futures keyed by unique id, cleaned up in ``finally``, and
  raise :mod:`bridge.errors` exceptions; the library's response queue would hand a late
  answer to the next call. One call is outstanding at a time (OCPP-J 1.6 section 4.1.1).

And it adds a fast path for the frequent messages (MeterValues, StatusNotification,
Heartbeat, BootNotification, FirmwareStatusNotification in 1.6): the library validates
every payload with ``jsonschema`` in a thread-pool round trip, converts keys to snake_case
and back, and validates its own answer, which cost more than everything else the bridge
does per frame. A payload that :func:`compile_schema`'s
check (built from the library's own 1.6 schema) proves valid goes to a ``fast_handlers``
entry that answers with a ready-made payload; anything else, valid or not, takes the
library's path, so every malformed frame still gets the library's exact CALLERROR. The
bridge's own calls (GetConfiguration after every boot, reconciliation, commands) and their
answers are validated the same way: the fast check first, the library when it says no.
"""

from __future__ import annotations

import asyncio
import decimal
import json
import time
import uuid
import weakref
from collections.abc import Awaitable, Callable, Iterator, Mapping
from functools import cache
from typing import Any, ClassVar

import ocpp.messages
from ocpp.exceptions import (
    FormationViolationError,
    FormatViolationError,
    GenericError,
    InternalError,
    OccurenceConstraintViolationError,
    OccurrenceConstraintViolationError,
    OCPPError,
    PropertyConstraintViolationError,
)
from ocpp.messages import (
    Call,
    CallError,
    CallResult,
    MessageType,
    get_validator,
    validate_payload,
)
from ocpp.routing import create_route_map
from ocpp.v16 import ChargePoint
from ocpp.v16.enums import Action
from websockets.exceptions import ConnectionClosed

from bridge.errorlog import ProtocolErrorLog
from bridge.errors import (
    CallErrorReceived,
    CallTimeoutError,
    ChargerGoneError,
    FrameError,
    InvalidCallError,
    InvalidResponseError,
)
from bridge.frames import cause_of, parse_frame
from chargetwin.deliveries import DeliveryTimeout, collected, collecting, confirmed
from chargetwin.json_text import compact
from chargetwin.metrics import (
    OCPP_CALL_ERRORS,
    OCPP_CALL_SECONDS,
    OCPP_CALLS,
    OCPP_CALLS_SENT,
    known_action,
)

# The library validates a payload with jsonschema in a thread-pool round trip by default;
# the hand-off (submit, a thread wake-up, the answer back through the loop) cost the bridge
# more than the check itself (7% of its CPU in a firmware campaign, py-spy), and the check
# holds the interpreter lock either way. Checked in the loop instead.
ocpp.messages.ASYNC_VALIDATION = False

# Label values for the calls metric: the OCPP 1.6 actions (security extension included).
OCPP16_ACTIONS = frozenset(a.value for a in Action)

# Longest errorDetails cause sent back; a cause can quote the charger's own input.
MAX_CAUSE = 200

Check = Callable[[Any], bool]
# A fast handler gets the endpoint and the camelCase payload (proven valid) and returns the
# camelCase answer.
FastHandler = Callable[[Any, dict[str, Any]], Awaitable[dict[str, Any]]]
_IGNORED_KEYWORDS = frozenset({"$schema", "id", "title", "description", "format"})


def compile_schema(schema: Mapping[str, Any]) -> Check | None:
    """A predicate that is True only for instances the JSON schema accepts.

    Covers the draft-04 subset the OCPP 1.6 schemas use (type, properties, required,
    additionalProperties false, items, minItems, enum, maxLength); None when the schema
    uses anything else. It may say False for a valid instance (a float where an integer
    is due): such instances go to the library, which decides. ``format`` is not checked,
    as the library's validator does not check it either.
    """
    kind = schema.get("type")
    known = {"type", "properties", "required", "additionalProperties", "items"}
    known |= {"minItems", "enum", "maxLength"}
    if set(schema) - _IGNORED_KEYWORDS - known:
        return None
    if kind == "object":
        properties: dict[str, Check] = {}
        for name, sub in schema.get("properties", {}).items():
            check = compile_schema(sub)
            if check is None:
                return None
            properties[name] = check
        required = tuple(schema.get("required", ()))
        if schema.get("additionalProperties", True) is not False:
            return None  # every OCPP 1.6 object closes itself; keep the check simple

        def check_object(value: Any) -> bool:
            if type(value) is not dict:
                return False
            for name in required:
                if name not in value:
                    return False
            for name, item in value.items():
                check = properties.get(name)
                if check is None or not check(item):
                    return False
            return True

        return check_object
    if kind == "array":
        items = compile_schema(schema.get("items", {"type": "object"}))
        if items is None or not isinstance(schema.get("items"), dict):
            return None
        least = int(schema.get("minItems", 0))

        def check_array(value: Any) -> bool:
            if type(value) is not list or len(value) < least:
                return False
            return all(items(item) for item in value)

        return check_array
    if kind == "string":
        enum = frozenset(schema["enum"]) if "enum" in schema else None
        longest = schema.get("maxLength")

        def check_string(value: Any) -> bool:
            if type(value) is not str:
                return False
            if enum is not None and value not in enum:
                return False
            return longest is None or len(value) <= longest

        return check_string
    if set(schema) & {"enum", "maxLength", "minItems"}:
        return None
    if kind == "integer":
        return lambda value: type(value) is int
    if kind == "number":
        return lambda value: type(value) is int or type(value) is float
    if kind == "boolean":
        return lambda value: type(value) is bool
    return None


# The library validates these payloads with Decimal numbers (their limits are multipleOf
# 0.1) but caches one validator per action whatever its float parser: asked first for a
# float one, it later divides a Decimal by a float and fails with a TypeError.
_DECIMAL_SCHEMAS = frozenset(
    {
        (MessageType.Call, "SetChargingProfile"),
        (MessageType.Call, "RemoteStartTransaction"),
        (MessageType.CallResult, "GetCompositeSchedule"),
    }
)


@cache
def fast_check(action: str, message_type: int = MessageType.Call) -> Check | None:
    """The compiled check of the library's 1.6 schema for a CALL or CALLRESULT payload."""
    if (message_type, action) in _DECIMAL_SCHEMAS:
        schema = get_validator(message_type, action, "1.6", parse_float=decimal.Decimal).schema
    else:
        schema = get_validator(message_type, action, "1.6").schema
    return compile_schema(schema)


async def validate(message: Call | CallResult) -> None:
    """The library's ``validate_payload``, skipped when the fast check proves it valid."""
    check = fast_check(message.action, message.message_type_id)
    if check is None or not check(message.payload):
        payload = message.payload
        try:
            await validate_payload(message, "1.6")
        finally:
            # For the Decimal actions above the library swaps in a copy with Decimal
            # numbers, which no JSON encoder of ours takes: keep the payload as received.
            message.payload = payload


# Integer fields whose range the schemas leave open ("integer") but the bridge must bound:
# OCPP 1.6 sections 6.31, 6.45, 6.47 give connectorId >= 0 (0 is the charger's main
# controller) for MeterValues and StatusNotification, > 0 for StartTransaction; the bridge
# keeps state per connector while a charger is connected (last status, availability) and
# the shadow keeps one entry each, so connector ids are bounded above too, or a charger
# inventing a new id per frame would grow them forever. A reservationId refers to one the
# central system issued and is stored in a 32-bit column, like the transaction ids the
# bridge issues (bridge.stores).
MAX_CONNECTOR_ID = 255
INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1
_RANGES: dict[str, tuple[tuple[str, int, int], ...]] = {
    "MeterValues": (("connectorId", 0, MAX_CONNECTOR_ID),),
    "StatusNotification": (("connectorId", 0, MAX_CONNECTOR_ID),),
    "StartTransaction": (
        ("connectorId", 1, MAX_CONNECTOR_ID),
        ("reservationId", INT32_MIN, INT32_MAX),
    ),
}


def range_problem(action: str, payload: dict[str, Any]) -> OCPPError | None:
    """A PropertyConstraintViolation for an integer field outside its range (above)."""
    for name, lowest, highest in _RANGES.get(action, ()):
        value = payload.get(name)
        if type(value) is int and not lowest <= value <= highest:
            cause = f"{name} {value} is outside {lowest}..{highest}"
            return PropertyConstraintViolationError(details={"cause": cause})
    return None  # in range, or left to the schema check (missing, not an integer)


def for_ocpp16(error: OCPPError) -> OCPPError:
    """The same error with the error code spelled as OCPP-J 1.6 section 4.2.3 spells it,
    and a cause short enough not to echo a charger's whole frame back at it."""
    cause = error.details.get("cause") if isinstance(error.details, dict) else None
    details = {"cause": str(cause)[:MAX_CAUSE]} if cause is not None else {}
    if isinstance(error, FormatViolationError):
        return FormationViolationError(description=error.description, details=details)
    if isinstance(error, OccurrenceConstraintViolationError):
        return OccurenceConstraintViolationError(description=error.description, details=details)
    return type(error)(description=error.description, details=details)


_ROUTES: dict[type, dict[str, dict[str, Any]]] = {}
_BOUND = ("_on_action", "_after_action")


def _not_stored(exc: DeliveryTimeout) -> OCPPError:
    # OCPP 1.6 section 4.7: a charger sends a transaction message again after an
    # InternalError; other messages it may send again or drop, as after no answer at all.
    return InternalError(description="not stored yet; send it again", details={"cause": str(exc)})


class RouteMap(Mapping[str, dict[str, Any]]):
    """``create_route_map(endpoint)``, from a per-class template bound at each lookup.

    The library reads ``route_map[action]`` only on its slow path, so nothing is bound for
    the frequent messages, and the endpoint is held weakly: a map of bound methods would
    put every endpoint in a reference cycle, which only a full garbage collection frees
    (see ``docs/bridge-benchmarks.md``).
    """

    __slots__ = ("_endpoint", "_template")

    def __init__(self, endpoint: Any) -> None:
        cls = type(endpoint)
        template = _ROUTES.get(cls)
        if template is None:
            template = _ROUTES[cls] = create_route_map(cls)
        self._template = template
        self._endpoint = weakref.ref(endpoint)

    def __getitem__(self, action: str) -> dict[str, Any]:
        entry = self._template[action]
        endpoint = self._endpoint()
        if endpoint is None:
            raise KeyError(action)  # the endpoint is gone: nothing to route to
        cls = type(endpoint)
        return {
            key: value.__get__(endpoint, cls) if key in _BOUND else value
            for key, value in entry.items()
        }

    def __iter__(self) -> Iterator[str]:
        return iter(self._template)

    def __len__(self) -> int:
        return len(self._template)


class LibraryLog:
    """What ``ChargePoint._handle_call`` logs through ``self.logger``: a failing handler
    (answered InternalError by the library) goes to the charger's bounded error log."""

    __slots__ = ("_errors",)

    def __init__(self, errors: ProtocolErrorLog) -> None:
        self._errors = errors

    def exception(self, message: str, *args: Any) -> None:
        self._errors.error(_first_line(message % args), internal=True)

    def info(self, *args: Any) -> None:
        pass  # "send ..." / "receive ...": every frame; not logged

    def warning(self, message: str, *args: Any) -> None:
        self._errors.error(_first_line(message % args))

    error = warning


def _first_line(text: str) -> str:
    return text.splitlines()[0] if text else text


class OcppEndpoint(ChargePoint):  # type: ignore[misc]  # ocpp ships no type information
    """One charger's OCPP-J 1.6 session: inbound routing and outbound calls."""

    # Actions answered without the library's routing (see the module docstring): plain
    # functions on the class, so an endpoint holds no bound methods of itself.
    fast_handlers: ClassVar[Mapping[str, FastHandler]] = {}
    # What differs by OCPP version (bridge.v201.endpoints overrides these): the actions
    # counted by name in the metrics, and how errors and payloads are checked and spelled.
    known_actions: ClassVar[frozenset[str]] = OCPP16_ACTIONS

    def wire_error(self, error: OCPPError) -> OCPPError:
        """``error`` as this version's CALLERROR spells it."""
        return for_ocpp16(error)

    def range_problem(self, action: str, payload: dict[str, Any]) -> OCPPError | None:
        return range_problem(action, payload)

    async def validate(self, message: Call | CallResult) -> None:
        """Raise the OCPPError a payload deserves under this version's schema."""
        await validate(message)

    def __init__(self, charger_id: str, connection: Any, *, call_timeout: float = 30.0) -> None:
        # ChargePoint.__init__ without its create_route_map(self), which probes every @on
        # name of every class in the process with getattr (a third of the CPU of accepting
        # a charger); the route map is built once per class and bound on lookup instead.
        # tests/bridge/test_bridge_settings_fast_checks.py checks we set what it sets.
        self.id = charger_id
        self._response_timeout = call_timeout
        self._connection = connection
        self.route_map = RouteMap(self)
        self._call_lock = asyncio.Lock()
        self._response_queue: asyncio.Queue[Any] = asyncio.Queue()
        self._unique_id_generator = uuid.uuid4
        # The library logs a failing handler with a traceback per frame; ours goes to the
        # charger's bounded error log (the library's other lines are per-frame debugging).
        self.errors = ProtocolErrorLog(charger_id)
        self.logger = LibraryLog(self.errors)
        self.charger_id = charger_id
        self.call_timeout = call_timeout
        self._pending: dict[str, asyncio.Future[CallResult | CallError]] = {}
        self._outgoing_lock = asyncio.Lock()
        # Work that must start only once the CALLRESULT is on the wire (e.g. GetConfiguration
        # after BootNotification), queued by handlers and run by route_message.
        self._after_response: list[Callable[[], None]] = []

    # --- inbound -------------------------------------------------------------------------
    async def route_message(self, raw_msg: str | bytes, admitted: bool = True) -> None:
        """Handle one frame; ``admitted`` False means over the flood limit.

        The one place a charger's frame enters: whatever it holds, it ends in an answer
        (or, for a CALLRESULT / CALLERROR, in the waiting call or a log line), never in an
        exception that closes the connection.
        """
        try:
            msg = parse_frame(raw_msg)
        except FrameError as error:
            await self._refuse_frame(error, raw_msg, admitted)
            return
        if type(msg) is Call:
            if not admitted:
                self.errors.error(f"over the flood limit: {msg.action:.40} {msg.unique_id}")
                await self._send_error(
                    msg.unique_id,
                    GenericError(description="rate limit", details={"cause": "too many messages"}),
                )
                return
            action = known_action(msg.action, self.known_actions)
            OCPP_CALLS.labels(action).inc()
            started = time.perf_counter()
            await self._route_call(msg)
            OCPP_CALL_SECONDS.labels(action).observe(time.perf_counter() - started)
            return
        future = self._pending.get(msg.unique_id)
        if future is None or future.done():
            self.errors.error(f"answer to an unknown or expired call {msg.unique_id} ignored")
        else:
            future.set_result(msg)
            # The caller takes its answer before the next frame is handled, so what it does
            # with it (a charging profile confirmed, a configuration recorded) is ordered
            # before the charger's later messages, as the charger sent them.
            await asyncio.sleep(0)

    async def _refuse_frame(self, error: FrameError, raw: str | bytes, admitted: bool) -> None:
        cause = cause_of(error.error)
        if not error.answered:
            # A CALLRESULT or CALLERROR is not answered (OCPP-J 1.6 section 4.2.3); the call
            # it answers, if one waits, fails now instead of at its timeout.
            self.errors.error(f"unusable answer {error.unique_id}: {cause}: {raw[:120]!r}")
            future = self._pending.get(error.unique_id)
            if future is not None and not future.done():
                future.set_exception(InvalidResponseError(f"unusable answer: {cause}"))
            return
        self.errors.error(f"frame answered with {error.error.code}: {cause}: {raw[:120]!r}")
        if admitted:  # a flood of garbage gets no answers
            await self._send_error(error.unique_id, self.wire_error(error.error))

    async def _route_call(self, msg: Call) -> None:
        problem = self.range_problem(msg.action, msg.payload)
        if problem is not None:
            self.errors.error(f"{msg.action} {msg.unique_id} answered with {problem.code}")
            await self._send_error(msg.unique_id, problem)
            return
        fast = self.fast_handlers.get(msg.action)
        if fast is not None:
            check = fast_check(msg.action)
            if check is not None and check(msg.payload):
                if await self._route_fast(msg, fast):
                    self._run_after_response()
                else:
                    self._after_response.clear()
                return
        try:
            # The library sends the answer itself, through _send, which waits for these.
            with collecting():
                await self._handle_call(msg)
        except OCPPError as error:
            self.errors.error(
                f"{msg.action:.40} {msg.unique_id} answered with {error.code}: {cause_of(error)}"
            )
            await self._send_error(msg.unique_id, self.wire_error(error))
            self._after_response.clear()
            return
        except ConnectionClosed:
            raise
        except Exception:
            # Outside the handler (which the library guards itself, see LibraryLog): our
            # defect, so InternalError as the library answers a failing handler.
            self.errors.error(f"{msg.action:.40} {msg.unique_id} failed", internal=True)
            await self._send_error(msg.unique_id, InternalError())
            self._after_response.clear()
            return
        self._run_after_response()

    def _run_after_response(self) -> None:
        hooks, self._after_response = self._after_response, []
        for hook in hooks:
            hook()

    async def _route_fast(self, msg: Call, fast: FastHandler) -> bool:
        """Answer a proven-valid CALL through its fast handler; False if it failed."""
        try:
            answer = await confirmed(fast(self, msg.payload))
        except DeliveryTimeout as exc:
            self.errors.error(f"{msg.action} {msg.unique_id} not stored: {exc}")
            await self._send_error(msg.unique_id, _not_stored(exc))
            return False
        except Exception:
            # As the library does for a failing handler: InternalError, and a log line.
            self.errors.error(f"{msg.action} {msg.unique_id} failed", internal=True)
            await self._send_error(msg.unique_id, InternalError())
            return False
        frame = [MessageType.CallResult, msg.unique_id, answer]
        await self._connection.send(compact(frame))
        return True

    async def _send(self, message: str) -> None:
        """The library's send; an answer to a call that published something waits for the
        broker's PUBACKs first (chargetwin.deliveries), else it becomes an InternalError."""
        deliveries = collected()
        if deliveries is not None and not deliveries.closed:
            try:
                await deliveries.wait()
            except DeliveryTimeout as exc:
                unique_id = str(json.loads(message)[1])
                self.errors.error(f"call {unique_id} not stored: {exc}")
                error = _not_stored(exc)
                OCPP_CALL_ERRORS.labels(error.code).inc()
                message = CallError(
                    unique_id, error.code, error.description, error.details
                ).to_json()
        await super()._send(message)

    async def _send_error(self, unique_id: str, error: OCPPError) -> None:
        OCPP_CALL_ERRORS.labels(error.code).inc()
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
            await self.validate(call)
        except OCPPError as error:
            cause = error.details.get("cause", error.description)
            raise InvalidCallError(f"{action}: {error.code}: {cause}") from error
        limit = self.call_timeout if timeout is None else timeout
        sent = OCPP_CALLS_SENT.labels  # counted once the call went out, by its outcome
        try:
            if include_wait:
                async with asyncio.timeout(limit):
                    answer = await self._exchange(call, None)
            else:
                answer = await self._exchange(call, limit)
        except TimeoutError as exc:
            sent(action, "timeout").inc()
            raise CallTimeoutError(f"{action}: no answer within {limit:g} s") from exc
        except ConnectionClosed as exc:
            sent(action, "gone").inc()
            raise ChargerGoneError(f"{action}: connection closed") from exc
        except ChargerGoneError:  # closed while waiting (fail_pending)
            sent(action, "gone").inc()
            raise
        except InvalidResponseError:  # an unusable answer frame (_refuse_frame)
            sent(action, "invalid").inc()
            raise

        if isinstance(answer, CallError):
            sent(action, "call_error").inc()
            raise CallErrorReceived(
                str(answer.error_code), str(answer.error_description), answer.error_details
            )
        answer.action = action
        try:
            await self.validate(answer)
        except OCPPError as error:
            sent(action, "invalid").inc()
            cause = error.details.get("cause", error.description)
            raise InvalidResponseError(f"{action}: invalid answer: {cause}") from error
        sent(action, "answered").inc()
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
        """The connection is gone: every waiting call fails now rather than at its timeout,
        and the count of errors not logged yet is logged."""
        self.errors.flush()
        for unique_id, future in list(self._pending.items()):
            if not future.done():
                future.set_exception(ChargerGoneError(f"connection closed ({unique_id})"))
