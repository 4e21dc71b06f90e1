"""The charger-initiated OCPP 1.6 messages: answer each, and mirror what it tells us.

Core profile, firmware management and the 1.6 security extension (whitepaper edition 2),
whose actions ``ocpp.v16.enums.Action`` includes. Each handler gets the payload as
snake_case keywords (the ocpp library's convention) after schema validation, answers with
a ``call_result`` dataclass, and publishes through the :class:`~bridge.reports.Reporter`:
shadow reports stamped with the charger's own timestamp where OCPP gives one and it is
plausible (:class:`~bridge.times.ChargerClock`), telemetry, events.

**Accepted first** (OCPP 1.6 section 4.2): a charger sends BootNotification each time it
boots and "SHALL NOT send any other request" until one is accepted. It does not boot again
after a mere reconnect, so a charger is accepted on a connection when it boots on it, or
when one of its boots was accepted before (this bridge process remembers the chargers it
accepted; any bridge's accepted boot shows in the shadow store,
:class:`bridge.stores.BootHistory`). Before that, every other CALL is answered CALLERROR
``SecurityError`` (OCPP-J 1.6 section 4.2.3; OCPP 2.0.1 prescribes the same answer,
B02.FR.09), the connection asks once for a BootNotification (TriggerMessage, section
5.17), and the charger is not online (presence is published when it is accepted). Its
messages are neither mirrored nor published.

A BootNotification is a new start of the charger: what it reported about its connectors
before (status, availability) may no longer hold (a reboot, a factory reset), so the boot
clears ``reported.connectors`` and ``reported.availability`` and the connection asks for
fresh StatusNotifications (TriggerMessage) of the connectors the charger has not reported
on its own shortly after the boot (``ChargerConnection._statuses_after_boot``). Meanwhile
the delta shows every desired availability again, so reconciliation runs again instead of
trusting a stale value.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cache, partial
from typing import Any, ClassVar, Protocol, TypeVar, cast

from ocpp.charge_point import camel_to_snake_case
from ocpp.exceptions import SecurityError
from ocpp.messages import Call
from ocpp.routing import on as ocpp_on
from ocpp.v16 import call_result
from ocpp.v16.enums import Action

from bridge.credentials import CredentialRotations
from bridge.endpoints import FastHandler, OcppEndpoint
from bridge.firmwares import FirmwareSupport
from bridge.reports import Reporter, charge_point_of, meter_value_messages
from bridge.stores import BootHistory, IdTagStore, ReportedConfigs, TransactionStore
from bridge.times import ChargerClock, iso_time, now

log = logging.getLogger(__name__)

F = TypeVar("F", bound=Callable[..., Any])

# OCPP 1.6 section 7 (Reason): StopTransaction.reason defaults to Local when absent.
DEFAULT_STOP_REASON = "Local"

# A connector reported Unavailable is inoperative; these statuses mean it is operative.
# Faulted says nothing about availability (OCPP 1.6 section 4.9 StatusNotification).
OPERATIVE_STATUSES = frozenset(
    {"Available", "Preparing", "Charging", "SuspendedEVSE", "SuspendedEV", "Finishing", "Reserved"}
)


@cache
def _snake_case(key: str) -> str:
    """The library's snake_case of a payload key (two regular expressions), kept per key:
    fast-path payloads are schema-valid, so the keys come from a small closed set."""
    return str(next(iter(camel_to_snake_case({key: None}))))


def on(action: Action) -> Callable[[F], F]:
    """``ocpp.routing.on`` with a type, so mypy keeps checking the handlers."""
    return cast(Callable[[F], F], ocpp_on(action))


class ConnectionEvents(Protocol):
    """What the connection owning this handler wants to hear about."""

    def booted(self) -> None:
        """BootNotification answered: fetch the configuration, then reconcile."""

    def availability_seen(self, connector: str, value: str) -> None:
        """A StatusNotification revealed a connector's availability."""

    def status_seen(self, connector_id: int) -> None:
        """A StatusNotification of the connector arrived (after the boot, if any)."""

    def firmware_status(self, status: str) -> None:
        """A (Signed)FirmwareStatusNotification arrived (firmware reconciliation follows it)."""

    def boot_wanted(self) -> None:
        """A charger not accepted yet sent something else than a BootNotification."""

    def transaction_started(self, connector_id: int, transaction_id: int, at: float) -> None:
        """A StartTransaction, received at ``at``, was answered (the charger knows the
        transaction's id)."""

    def transaction_stopped(self, transaction_id: int) -> None:
        """A StopTransaction arrived."""


@dataclass(frozen=True, slots=True)
class Services:
    """What the handlers need from the process, shared by all connections."""

    reporter: Reporter
    transactions: TransactionStore
    id_tags: IdTagStore
    heartbeat_interval: int = 300
    data_transfer_vendors: frozenset[str] = field(default_factory=frozenset)
    firmware: FirmwareSupport | None = None  # None: firmware deltas are not acted on
    # Chargers whose BootNotification this process accepted (they may reconnect without
    # booting again); shared by all connections, at most one entry per charger.
    accepted: set[str] = field(default_factory=set)
    credentials: CredentialRotations | None = None  # None: password rotations wait
    # None: no store to ask, so a charger that does not boot first is let in (unknown).
    boot_history: BootHistory | None = None
    # None: no store to ask, so a boot's configuration read replaces reported.config whole.
    reported_configs: ReportedConfigs | None = None


class ChargePointHandler(OcppEndpoint):
    """Answers and mirrors every charger-initiated OCPP 1.6 message of one charger."""

    def __init__(
        self,
        charger_id: str,
        connection: Any,
        services: Services,
        events: ConnectionEvents,
        *,
        call_timeout: float = 30.0,
        connected_at: float | None = None,
    ) -> None:
        super().__init__(charger_id, connection, call_timeout=call_timeout)
        self.services = services
        self.events = events
        self._reporter = services.reporter
        self._statuses: dict[int, str] = {}
        # May the charger talk (a boot accepted on this connection, or earlier)? Until the
        # connection has looked the charger's history up, ``history`` is pending.
        self.accepted = False
        self.history: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._boot_asked = False
        self.clock = ChargerClock(
            charger_id,
            now() if connected_at is None else connected_at,
            SkewPublisher(services.reporter, charger_id),
        )
        # The BootNotification of this connection, as reported (vendor, model, firmware...).
        self.charge_point: dict[str, Any] | None = None

    # --- the fast path: camelCase payloads already proven valid (bridge.endpoints) ---------
    async def _fast_boot_notification(self, payload: dict[str, Any]) -> dict[str, Any]:
        # Every field is a top-level string: camelCase -> snake_case is the whole mapping.
        boot = {_snake_case(key): value for key, value in payload.items()}
        answer = await self.on_boot_notification(**boot)
        return {
            "currentTime": answer.current_time,
            "interval": answer.interval,
            "status": answer.status,
        }

    async def _fast_heartbeat(self, payload: dict[str, Any]) -> dict[str, Any]:
        return {"currentTime": iso_time()}

    async def _fast_status_notification(self, payload: dict[str, Any]) -> dict[str, Any]:
        await self.on_status_notification(
            connector_id=payload["connectorId"],
            error_code=payload["errorCode"],
            status=payload["status"],
            timestamp=payload.get("timestamp"),
            info=payload.get("info"),
            vendor_id=payload.get("vendorId"),
            vendor_error_code=payload.get("vendorErrorCode"),
        )
        return {}

    async def _fast_meter_values(self, payload: dict[str, Any]) -> dict[str, Any]:
        # The handler takes the library's snake_case shape; only one key differs.
        meter_values = [
            {"timestamp": value.get("timestamp"), "sampled_value": value["sampledValue"]}
            for value in payload["meterValue"]
        ]
        await self.on_meter_values(
            connector_id=payload["connectorId"],
            meter_value=meter_values,
            transaction_id=payload.get("transactionId"),
        )
        return {}

    async def _fast_firmware_status_notification(self, payload: dict[str, Any]) -> dict[str, Any]:
        # Four of these per firmware update of every charger in a campaign.
        self._firmware_status(payload["status"], None)
        return {}

    fast_handlers: ClassVar[Mapping[str, FastHandler]] = {
        "BootNotification": _fast_boot_notification,
        "Heartbeat": _fast_heartbeat,
        "StatusNotification": _fast_status_notification,
        "MeterValues": _fast_meter_values,
        "FirmwareStatusNotification": _fast_firmware_status_notification,
    }

    # --- accepted first (see the module docstring) --------------------------------------------
    async def _route_call(self, msg: Call) -> None:
        if self.accepted or msg.action == "BootNotification":
            await super()._route_call(msg)
            return
        if not self.history.done():
            await asyncio.shield(self.history)
        if self.history.result():
            await super()._route_call(msg)
            return
        if not self._boot_asked:
            self._boot_asked = True
            log.warning(
                "%s: %s before an accepted BootNotification: SecurityError",
                self.charger_id,
                msg.action,
            )
            self.events.boot_wanted()
        await self._send_error(
            msg.unique_id,
            SecurityError(
                description="BootNotification not accepted yet",
                details={"cause": "send BootNotification first (OCPP 1.6 section 4.2)"},
            ),
        )

    # --- core: registration and liveness ----------------------------------------------------
    @on(Action.boot_notification)
    async def on_boot_notification(self, **boot: Any) -> call_result.BootNotification:
        at = now()
        charge_point = charge_point_of(boot)
        self.charge_point = charge_point
        # Connector state from before this boot is unknown now (see the module docstring).
        reported: dict[str, Any] = {
            "chargePoint": charge_point,
            "rebootRequired": None,
            "connectors": None,
            "availability": None,
            # Charging profiles may not survive a reboot: every desired limit is in the
            # delta again and set again (bridge.charging_limits).
            "chargingLimit": None,
        }
        if "firmwareVersion" in charge_point:
            reported["firmware"] = {"version": charge_point["firmwareVersion"]}
        self._statuses.clear()
        self.accepted = True
        self.services.accepted.add(self.charger_id)
        self._reporter.report(self.charger_id, reported, self.clock.reset_state(at))
        self._reporter.event(self.charger_id, "boot", {**charge_point, "timestamp": at})
        log.info(
            "%s: booted (%s %s, firmware %s)",
            self.charger_id,
            charge_point.get("vendor"),
            charge_point.get("model"),
            charge_point.get("firmwareVersion"),
        )
        self._after_response.append(self.events.booted)
        return call_result.BootNotification(
            current_time=iso_time(at),
            interval=self.services.heartbeat_interval,
            status="Accepted",
        )

    @on(Action.heartbeat)
    async def on_heartbeat(self, **_: Any) -> call_result.Heartbeat:
        return call_result.Heartbeat(current_time=iso_time())

    @on(Action.status_notification)
    async def on_status_notification(
        self,
        connector_id: int,
        error_code: str,
        status: str,
        timestamp: str | None = None,
        info: str | None = None,
        vendor_id: str | None = None,
        vendor_error_code: str | None = None,
        **_: Any,
    ) -> call_result.StatusNotification:
        at = self.clock.read(timestamp, "StatusNotification")
        connector = str(connector_id)
        # Absent optional fields are sent as null so an old info/vendor code is deleted.
        state = {
            "status": status,
            "errorCode": error_code,
            "info": info,
            "vendorId": vendor_id,
            "vendorErrorCode": vendor_error_code,
            "timestamp": at,
        }
        reported: dict[str, Any] = {"connectors": {connector: state}}
        availability = _availability_of(status)
        if availability is not None:
            reported["availability"] = {connector: availability}
            self.events.availability_seen(connector, availability)
        self._reporter.report(self.charger_id, reported, self.clock.state_stamp(connector, at))
        previous = self._statuses.get(connector_id)
        self._statuses[connector_id] = status
        self.events.status_seen(connector_id)
        self._reporter.event(
            self.charger_id,
            "status",
            {"connectorId": connector_id, "previous": previous, **state},
        )
        return call_result.StatusNotification()

    # --- core: metering and transactions ------------------------------------------------------
    @on(Action.meter_values)
    async def on_meter_values(
        self,
        connector_id: int,
        meter_value: list[dict[str, Any]],
        transaction_id: int | None = None,
        **_: Any,
    ) -> call_result.MeterValues:
        for message in meter_value_messages(
            self._meter_value_time, connector_id, transaction_id, meter_value
        ):
            self._reporter.telemetry(self.charger_id, "meterValues", message)
        return call_result.MeterValues()

    @on(Action.authorize)
    async def on_authorize(self, id_tag: str, **_: Any) -> call_result.Authorize:
        info = await self.services.id_tags.lookup(id_tag)
        log.info("%s: Authorize %s -> %s", self.charger_id, id_tag, info["status"])
        return call_result.Authorize(id_tag_info=info)

    @on(Action.start_transaction)
    async def on_start_transaction(
        self,
        connector_id: int,
        id_tag: str,
        meter_start: int,
        timestamp: str,
        reservation_id: int | None = None,
        **_: Any,
    ) -> call_result.StartTransaction:
        received = now()
        reading = self.clock.reading(timestamp, "StartTransaction")
        at = reading.at
        info = await self.services.id_tags.lookup(id_tag)
        # A retried start is recognised by its timestamp; one not believed was replaced by
        # the receipt time, which differs at every retry (bridge.stores).
        started = await self.services.transactions.start(
            self.charger_id,
            connector_id,
            id_tag,
            meter_start,
            at,
            reservation_id,
            exact_time=reading.kept,
        )
        log.info(
            "%s: transaction %d started on connector %d (%s%s)",
            self.charger_id,
            started.transaction_id,
            connector_id,
            info["status"],
            ", retried" if started.retried else "",
        )
        self._reporter.event(
            self.charger_id,
            "transaction",
            {
                "event": "started",
                "transactionId": started.transaction_id,
                "connectorId": connector_id,
                "idTag": id_tag,
                "idTagStatus": info["status"],
                "meterStart": meter_start,
                "reservationId": reservation_id,
                "timestamp": at,
                "retried": started.retried,
            },
        )
        if info["status"] == "Accepted":
            # After the answer: a TxProfile names a transaction the charger must know.
            self._after_response.append(
                partial(
                    self.events.transaction_started,
                    connector_id,
                    started.transaction_id,
                    received,
                )
            )
        return call_result.StartTransaction(transaction_id=started.transaction_id, id_tag_info=info)

    @on(Action.stop_transaction)
    async def on_stop_transaction(
        self,
        meter_stop: int,
        timestamp: str,
        transaction_id: int,
        reason: str | None = None,
        id_tag: str | None = None,
        transaction_data: list[dict[str, Any]] | None = None,
        **_: Any,
    ) -> call_result.StopTransaction:
        at = self.clock.read(timestamp, "StopTransaction")
        stop_reason = reason or DEFAULT_STOP_REASON
        stopped = await self.services.transactions.stop(
            self.charger_id, transaction_id, meter_stop, at, stop_reason, id_tag
        )
        if not stopped.known:
            log.warning(
                "%s: StopTransaction for unknown transaction %d", self.charger_id, transaction_id
            )
        for message in meter_value_messages(
            self._meter_value_time, stopped.connector_id, transaction_id, transaction_data or []
        ):
            self._reporter.telemetry(self.charger_id, "meterValues", message)
        self._reporter.event(
            self.charger_id,
            "transaction",
            {
                "event": "stopped",
                "transactionId": transaction_id,
                "connectorId": stopped.connector_id,
                "idTag": id_tag if id_tag is not None else stopped.id_tag,
                "meterStart": stopped.meter_start,
                "meterStop": meter_stop,
                "reason": stop_reason,
                "startedAt": stopped.started_at,
                "timestamp": at,
                "known": stopped.known,
            },
        )
        log.info("%s: transaction %d stopped (%s)", self.charger_id, transaction_id, stop_reason)
        self._after_response.append(partial(self.events.transaction_stopped, transaction_id))
        if id_tag is None:
            return call_result.StopTransaction()
        return call_result.StopTransaction(id_tag_info=await self.services.id_tags.lookup(id_tag))

    # --- core: data transfer ------------------------------------------------------------------
    @on(Action.data_transfer)
    async def on_data_transfer(
        self, vendor_id: str, message_id: str | None = None, data: str | None = None, **_: Any
    ) -> call_result.DataTransfer:
        known = vendor_id in self.services.data_transfer_vendors
        status = "Accepted" if known else "UnknownVendorId"
        self._reporter.event(
            self.charger_id,
            "dataTransfer",
            {
                "vendorId": vendor_id,
                "messageId": message_id,
                "data": data,
                "status": status,
                "timestamp": now(),
            },
        )
        return call_result.DataTransfer(status=status)

    # --- firmware management and diagnostics ----------------------------------------------------
    @on(Action.firmware_status_notification)
    async def on_firmware_status_notification(
        self, status: str, **_: Any
    ) -> call_result.FirmwareStatusNotification:
        self._firmware_status(status, None)
        return call_result.FirmwareStatusNotification()

    @on(Action.diagnostics_status_notification)
    async def on_diagnostics_status_notification(
        self, status: str, **_: Any
    ) -> call_result.DiagnosticsStatusNotification:
        self._reporter.event(
            self.charger_id,
            "diagnostics",
            {"kind": "diagnostics", "status": status, "timestamp": now()},
        )
        return call_result.DiagnosticsStatusNotification()

    # --- 1.6 security extension -------------------------------------------------------------
    @on(Action.signed_firmware_status_notification)
    async def on_signed_firmware_status_notification(
        self, status: str, request_id: int | None = None, **_: Any
    ) -> call_result.SignedFirmwareStatusNotification:
        self._firmware_status(status, request_id)
        return call_result.SignedFirmwareStatusNotification()

    @on(Action.log_status_notification)
    async def on_log_status_notification(
        self, status: str, request_id: int | None = None, **_: Any
    ) -> call_result.LogStatusNotification:
        self._reporter.event(
            self.charger_id,
            "diagnostics",
            {"kind": "log", "status": status, "requestId": request_id, "timestamp": now()},
        )
        return call_result.LogStatusNotification()

    @on(Action.security_event_notification)
    async def on_security_event_notification(
        self, type: str, timestamp: str, tech_info: str | None = None, **_: Any
    ) -> call_result.SecurityEventNotification:
        at = self.clock.read(timestamp, "SecurityEventNotification")
        log.info("%s: security event %s", self.charger_id, type)
        self._reporter.event(
            self.charger_id, "security", {"type": type, "techInfo": tech_info, "timestamp": at}
        )
        return call_result.SecurityEventNotification()

    @on(Action.sign_certificate)
    async def on_sign_certificate(self, csr: str, **_: Any) -> call_result.SignCertificate:
        # No certificate authority yet (security profile 3 is not implemented): refuse,
        # and tell the operator through a security event.
        self._reporter.event(
            self.charger_id,
            "security",
            {
                "type": "SignCertificateRejected",
                "techInfo": "no certificate authority",
                "timestamp": now(),
            },
        )
        return call_result.SignCertificate(status="Rejected")

    # --- helpers --------------------------------------------------------------------------
    def _meter_value_time(self, value: object) -> float:
        return self.clock.read(value, "MeterValues")

    def _firmware_status(self, status: str, request_id: int | None) -> None:
        at = now()
        self._reporter.report(
            self.charger_id, {"firmware": {"status": status, "updatedAt": at}}, at
        )
        event: dict[str, Any] = {"status": status, "timestamp": at}
        if request_id is not None:
            event["requestId"] = request_id
        self._reporter.event(self.charger_id, "firmware", event)
        log.info("%s: firmware status %s", self.charger_id, status)
        self.events.firmware_status(status)


class SkewPublisher:
    """Publishes a clock's verdict: ``reported.connection.clockSkew``, and the ``clockSkew``
    event when a skew appears or goes (for rules to alert on). Holds no reference to the
    handler, so the handler and its clock form no reference cycle."""

    __slots__ = ("_charger_id", "_published", "_reporter")

    def __init__(self, reporter: Reporter, charger_id: str) -> None:
        self._reporter = reporter
        self._charger_id = charger_id
        self._published = False

    def __call__(self, skew: dict[str, Any] | None, at: float) -> None:
        self._reporter.report(self._charger_id, {"connection": {"clockSkew": skew}}, at)
        if skew is not None:
            self._published = True
            self._reporter.event(self._charger_id, "clockSkew", {**skew, "timestamp": at})
        elif self._published:
            self._published = False
            self._reporter.event(
                self._charger_id, "clockSkew", {"status": "ok", "seconds": None, "timestamp": at}
            )


def _availability_of(status: str) -> str | None:
    if status == "Unavailable":
        return "Inoperative"
    if status in OPERATIVE_STATUSES:
        return "Operative"
    return None
