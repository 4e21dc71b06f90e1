"""The charger-initiated OCPP 2.0.1 messages: answer each, and mirror what it tells us.

Each handler takes the camelCase payload (already checked against the 2.0.1 schema by
:class:`~bridge.v201.endpoints.Endpoint201`) and returns the camelCase answer, which is
checked against the response schema before it is sent (a bridge defect then answers
InternalError rather than an invalid frame). Every charger-initiated 2.0.1 action has a
handler: the ones the bridge acts on, and the rest acknowledged with the answer the
specification gives a CSMS without that feature, published as a ``notification`` event
so nothing a station says is lost (see ``docs/ocpp201.md`` for the table).

**Boot** (OCPP 2.0.1 B01, B02): the first BootNotification on a connection is answered
Pending; once the answer is on the wire the connection reads the device model
(GetBaseReport FullInventory, assembled from NotifyReport parts) and then asks the station
to boot again (TriggerMessage BootNotification, use case F06); that BootNotification,
or the one the station sends by itself after the Pending ``interval``, is Accepted. While
Pending the station may send only BootNotification, Heartbeat and the NotifyReport it was
asked for; anything else before it is accepted is answered SecurityError (B02.FR.09), as
for 1.6. A station accepted before (on any bridge) that reconnects without booting is
accepted as it is, like a 1.6 charger.

**Port identity**: a 2.0.1 EVSE is what a 1.6 connector is (the unit that charges one
vehicle at a time), so ``reported.connectors`` and every event and telemetry message key a
2.0.1 port by ``evseId`` where 1.6 uses ``connectorId``; the connector within the EVSE is
kept beside it (``evseConnectorId``, and ``connectors.N.connectors`` per connector).
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from ocpp.exceptions import SecurityError
from ocpp.messages import Call

from bridge.handlers import Services, SkewPublisher
from bridge.reports import Reporter
from bridge.times import ChargerClock, iso_time, now
from bridge.v201.devicemodel import ReportAssembly, VariableKey, report_entries
from bridge.v201.endpoints import VERSION, Endpoint201, Handler
from bridge.v201.transactions import TransactionEvents, sample_value

log = logging.getLogger(__name__)

# Seconds a Pending station waits before it sends BootNotification again (B02.FR.01): the
# bridge normally asks sooner, with TriggerMessage, once the device model is read.
PENDING_INTERVAL = 10
# Sent by a station before it is accepted (see the module docstring).
WHILE_PENDING = frozenset({"BootNotification", "Heartbeat", "NotifyReport"})
# ConnectorStatusEnumType -> availability (Faulted says nothing about it).
AVAILABILITY = {
    "Available": "Operative",
    "Occupied": "Operative",
    "Reserved": "Operative",
    "Unavailable": "Inoperative",
}
# The status of a port (an EVSE) from its connectors': the one that matters most to a
# driver first (one connector in use means the EVSE is in use).
_PORT_STATUS_ORDER = ("Occupied", "Reserved", "Available", "Faulted", "Unavailable")


class StationEvents(Protocol):
    """What the connection owning this handler wants to hear about."""

    def booted(self) -> None:
        """A BootNotification was Accepted: online, reconcile."""

    def boot_pending(self) -> None:
        """A BootNotification was answered Pending: read the device model."""

    def availability_seen(self, port: str, value: str) -> None:
        """A StatusNotification revealed a port's availability."""

    def boot_wanted(self) -> None:
        """A station not accepted yet sent something else than a BootNotification."""

    def firmware_status(self, status: str, request_id: int | None) -> None:
        """A FirmwareStatusNotification arrived (firmware reconciliation follows it)."""

    def transaction_started(self, evse_id: int, transaction_id: str, at: float) -> None:
        """A transaction runs on the EVSE (a TransactionEvent, received at ``at``, said so
        and was answered): a charging limit set from now on binds it with a TxProfile."""

    def transaction_stopped(self, transaction_id: str) -> None:
        """The transaction ended (TransactionEvent Ended, answered)."""


def charge_point_of(station: Mapping[str, Any]) -> dict[str, Any]:
    """``reported.chargePoint`` from a 2.0.1 ChargingStationType (same keys as for 1.6)."""
    modem = station.get("modem") or {}
    fields = {
        "vendor": station.get("vendorName"),
        "model": station.get("model"),
        "serialNumber": station.get("serialNumber"),
        "firmwareVersion": station.get("firmwareVersion"),
        "iccid": modem.get("iccid"),
        "imsi": modem.get("imsi"),
    }
    return {key: value for key, value in fields.items() if value is not None}


def port_status(statuses: Mapping[int, str]) -> str:
    """One status for an EVSE from its connectors' (see ``_PORT_STATUS_ORDER``)."""
    present = set(statuses.values())
    for status in _PORT_STATUS_ORDER:
        if status in present:
            return status
    return next(iter(present))


def id_token_info(info: Mapping[str, Any]) -> dict[str, Any]:
    """A 2.0.1 IdTokenInfoType from the bridge's id-tag lookup (1.6 IdTagInfo)."""
    out: dict[str, Any] = {"status": info["status"]}
    if info.get("expiryDate"):
        out["cacheExpiryDateTime"] = info["expiryDate"]
    return out


def meter_messages(
    read_time: Callable[[object], float],
    evse_id: int | None,
    transaction_id: str | None,
    meter_values: list[dict[str, Any]],
) -> list[dict[str, Any]]:
    """The ``meterValues`` telemetry of 2.0.1 MeterValueType elements (as for 1.6, plus
    ``evseId``; ``connectorId`` is the port, i.e. the EVSE)."""
    return [
        {
            "connectorId": evse_id,
            "evseId": evse_id,
            "transactionId": transaction_id,
            "timestamp": read_time(value.get("timestamp")),
            "values": [sample_value(s) for s in value.get("sampledValue") or ()],
        }
        for value in meter_values
    ]


class StationHandler(Endpoint201):
    """Answers and mirrors every charger-initiated OCPP 2.0.1 message of one station."""

    def __init__(
        self,
        charger_id: str,
        connection: Any,
        services: Services,
        events: StationEvents,
        transactions: TransactionEvents,
        *,
        call_timeout: float = 30.0,
        connected_at: float | None = None,
    ) -> None:
        super().__init__(charger_id, connection, call_timeout=call_timeout)
        self.services = services
        self.events = events
        self.transactions = transactions
        self._reporter: Reporter = services.reporter
        self._statuses: dict[int, dict[int, str]] = {}
        self.accepted = False
        self.history: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._boot_asked = False
        self.clock = ChargerClock(
            charger_id,
            now() if connected_at is None else connected_at,
            SkewPublisher(services.reporter, charger_id),
        )
        self.charge_point: dict[str, Any] | None = None
        # The boot sequence (module docstring): None, "reading" (Pending answered, device
        # model being read) or "read" (the next BootNotification is Accepted).
        self.model_state: str | None = None
        self.reports = ReportAssembly()
        # EVSE -> the transaction running there, as TransactionEvents on this connection
        # told (charging limits bind it with a TxProfile).
        self._running: dict[int, str] = {}

    # --- routing -------------------------------------------------------------------------
    async def _route_call(self, msg: Call) -> None:
        if self.accepted or msg.action in WHILE_PENDING:
            await super()._route_call(msg)
            return
        if not self.history.done():
            await asyncio.shield(self.history)
        if self.history.result():
            await super()._route_call(msg)
            return
        if not self._boot_asked and self.model_state is None:
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
                details={"cause": "send BootNotification first (OCPP 2.0.1 B02.FR.09)"},
            ),
        )

    # --- registration and liveness ---------------------------------------------------------
    async def _boot_notification(self, payload: dict[str, Any]) -> dict[str, Any]:
        at = now()
        reason = payload.get("reason")
        charge_point = charge_point_of(payload["chargingStation"])
        if self.model_state != "read":
            if self.model_state is None:
                self.model_state = "reading"
                self._after_response.append(self.events.boot_pending)
            log.info("%s: BootNotification (%s): Pending", self.charger_id, reason)
            return {"currentTime": iso_time(at), "interval": PENDING_INTERVAL, "status": "Pending"}
        self.model_state = None  # the next boot reads the device model again
        self.charge_point = charge_point
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
        self._running.clear()
        self.accepted = True
        self.services.accepted.add(self.charger_id)
        self._reporter.report(self.charger_id, reported, self.clock.reset_state(at))
        self._reporter.event(
            self.charger_id,
            "boot",
            {**charge_point, "reason": reason, "ocppVersion": VERSION, "timestamp": at},
        )
        log.info(
            "%s: booted (%s %s, firmware %s, %s)",
            self.charger_id,
            charge_point.get("vendor"),
            charge_point.get("model"),
            charge_point.get("firmwareVersion"),
            reason,
        )
        self._after_response.append(self.events.booted)
        return {
            "currentTime": iso_time(at),
            "interval": self.services.heartbeat_interval,
            "status": "Accepted",
        }

    async def _heartbeat(self, payload: dict[str, Any]) -> dict[str, Any]:
        return {"currentTime": iso_time()}

    async def _status_notification(self, payload: dict[str, Any]) -> dict[str, Any]:
        at = self.clock.read(payload["timestamp"], "StatusNotification")
        evse_id, connector_id = payload["evseId"], payload["connectorId"]
        status = payload["connectorStatus"]
        statuses = self._statuses.setdefault(evse_id, {})
        previous = port_status(statuses) if statuses else None
        statuses[connector_id] = status
        port = str(evse_id)
        current = port_status(statuses)
        state = {
            "status": current,
            "errorCode": None,  # 2.0.1 reports faults through NotifyEvent
            "info": None,
            "vendorId": None,
            "vendorErrorCode": None,
            "timestamp": at,
            "connectors": {str(connector_id): status},
        }
        reported: dict[str, Any] = {"connectors": {port: state}}
        availability = AVAILABILITY.get(current)
        if availability is not None:
            reported["availability"] = {port: availability}
            self.events.availability_seen(port, availability)
        self._reporter.report(self.charger_id, reported, self.clock.state_stamp(port, at))
        event = {k: v for k, v in state.items() if k != "connectors"}
        self._reporter.event(
            self.charger_id,
            "status",
            {
                "connectorId": evse_id,
                "evseId": evse_id,
                "evseConnectorId": connector_id,
                "connectorStatus": status,
                "previous": previous,
                **event,
            },
        )
        return {}

    # --- device model ----------------------------------------------------------------------
    async def _notify_report(self, payload: dict[str, Any]) -> dict[str, Any]:
        whole = self.reports.add(
            payload["requestId"],
            payload["seqNo"],
            bool(payload.get("tbc", False)),
            list(payload.get("reportData") or ()),
        )
        if whole is not None:  # a report nobody waits for (an operator's GetReport)
            self.record_report(whole, complete=False)
        return {}

    def record_report(
        self, report_data: list[Any], *, complete: bool
    ) -> tuple[dict[str, str], dict[str, dict[str, Any]]]:
        """A whole report into ``reported.config`` and ``reported.deviceModel``.

        ``complete``: a FullInventory, which replaces both whole, so a variable the station
        no longer has does not stay reported for ever (as GetConfiguration for 1.6).
        """
        config, model = report_entries(report_data)
        at = now()
        if complete:
            self._reporter.report(self.charger_id, {"config": None, "deviceModel": None}, at)
            at += 1e-6  # the values land after the clearing, in the twin's order
        # Two updates: the values land even if the metadata would take the shadow past the
        # twin's size limit (413; docs/ocpp201.md, Size).
        if config:
            self._reporter.report(self.charger_id, {"config": config}, at)
        if model:
            self._reporter.report(self.charger_id, {"deviceModel": model}, at + 1e-6)
        return config, model

    async def _notify_event(self, payload: dict[str, Any]) -> dict[str, Any]:
        for data in payload.get("eventData") or ():
            key = VariableKey.of(data["component"], data["variable"], None)
            self._reporter.event(
                self.charger_id,
                "deviceEvent",
                {
                    "key": key.text(),
                    "component": data["component"].get("name"),
                    "variable": data["variable"].get("name"),
                    "evseId": key.evse,
                    "evseConnectorId": key.connector,
                    "eventId": data.get("eventId"),
                    "trigger": data.get("trigger"),
                    "actualValue": data.get("actualValue"),
                    "techCode": data.get("techCode"),
                    "techInfo": data.get("techInfo"),
                    "cleared": data.get("cleared", False),
                    "notificationType": data.get("eventNotificationType"),
                    "transactionId": data.get("transactionId"),
                    "timestamp": self.clock.read(data.get("timestamp"), "NotifyEvent"),
                },
            )
        return {}

    # --- metering and transactions -----------------------------------------------------------
    async def _meter_values(self, payload: dict[str, Any]) -> dict[str, Any]:
        for message in meter_messages(
            self._meter_value_time, payload["evseId"], None, payload["meterValue"]
        ):
            self._reporter.telemetry(self.charger_id, "meterValues", message)
        return {}

    async def _authorize(self, payload: dict[str, Any]) -> dict[str, Any]:
        info = await self._token_info(payload["idToken"])
        log.info("%s: Authorize -> %s", self.charger_id, info["status"])
        return {"idTokenInfo": info}

    async def _token_info(self, token: Mapping[str, Any]) -> dict[str, Any]:
        if token.get("type") == "NoAuthorization":
            return {"status": "Accepted"}  # OCPP 2.0.1 IdTokenEnumType: no token needed
        return id_token_info(await self.services.id_tags.lookup(str(token["idToken"])))

    async def _transaction_event(self, payload: dict[str, Any]) -> dict[str, Any]:
        received = now()
        reading = self.clock.reading(payload["timestamp"], "TransactionEvent")
        recorded = await self.transactions.record(
            self.charger_id, payload, reading.at, exact_time=reading.kept
        )
        answer: dict[str, Any] = {}
        token = payload.get("idToken")
        if token is not None:
            answer["idTokenInfo"] = await self._token_info(token)
        if recorded.repeated:
            log.info(
                "%s: TransactionEvent %s seqNo %s again: already recorded",
                self.charger_id,
                payload["transactionInfo"]["transactionId"],
                payload["seqNo"],
            )
            # Sent again on a new connection: it still tells which transaction runs where.
            evse_seen = (payload.get("evse") or {}).get("id")
            transaction = str(payload["transactionInfo"]["transactionId"])
            self._follow_transaction(payload["eventType"], evse_seen, transaction, received)
            return answer
        session = recorded.session
        assert session is not None
        info = payload["transactionInfo"]
        transaction_id = str(info["transactionId"])
        evse = payload.get("evse") or {}
        evse_id = evse.get("id", session.evse_id)
        for message in meter_messages(
            self._meter_value_time, evse_id, transaction_id, payload.get("meterValue") or []
        ):
            self._reporter.telemetry(self.charger_id, "meterValues", message)
        common = {
            "transactionId": transaction_id,
            "sessionId": session.session_id,
            "connectorId": evse_id,
            "evseId": evse_id,
            "evseConnectorId": evse.get("connectorId", session.connector_id),
            "seqNo": payload["seqNo"],
            "triggerReason": payload["triggerReason"],
            "offline": payload.get("offline", False),
            "chargingState": info.get("chargingState"),
            "timestamp": reading.at,
        }
        if recorded.started:
            self._reporter.event(
                self.charger_id,
                "transaction",
                {
                    "event": "started",
                    **common,
                    "idTag": session.id_tag or None,
                    "meterStart": session.meter_start,
                    "retried": False,
                },
            )
        kind = payload["eventType"]
        if kind == "Ended":
            stopped = await self.services.transactions.get(session.session_id) or {}
            self._reporter.event(
                self.charger_id,
                "transaction",
                {
                    "event": "stopped",
                    **common,
                    "idTag": stopped.get("stopIdTag") or stopped.get("idTag") or None,
                    "meterStart": stopped.get("meterStart"),
                    "meterStop": stopped.get("meterStop"),
                    "reason": stopped.get("stopReason"),
                    "startedAt": stopped.get("startedAt"),
                    "known": True,
                },
            )
        elif not recorded.started:
            self._reporter.event(self.charger_id, "transaction", {"event": "updated", **common})
        self._follow_transaction(kind, evse_id, transaction_id, received)
        # Started and Ended at info; the periodic Updated events (one per station every
        # sampling interval) at debug, as 1.6 MeterValues are not logged.
        log.log(
            logging.DEBUG if kind == "Updated" else logging.INFO,
            "%s: TransactionEvent %s %s (%s, seqNo %s)",
            self.charger_id,
            kind,
            transaction_id,
            payload["triggerReason"],
            payload["seqNo"],
        )
        return answer

    def _follow_transaction(
        self, kind: str, evse_id: Any, transaction_id: str, received: float
    ) -> None:
        """Tell the connection, after the answer, which transaction runs on which EVSE:
        a TxProfile names a transaction the station must already know."""
        if kind == "Ended":
            for evse, running in list(self._running.items()):
                if running == transaction_id:
                    del self._running[evse]
            self._after_response.append(
                functools.partial(self.events.transaction_stopped, transaction_id)
            )
            return
        if not isinstance(evse_id, int) or self._running.get(evse_id) == transaction_id:
            return
        # Started, or the first event of a transaction seen on this connection (a
        # reconnect in mid-transaction): it runs there now.
        self._running[evse_id] = transaction_id
        self._after_response.append(
            functools.partial(self.events.transaction_started, evse_id, transaction_id, received)
        )

    # --- firmware, logs, security ------------------------------------------------------------
    async def _firmware_status_notification(self, payload: dict[str, Any]) -> dict[str, Any]:
        at = now()
        status = payload["status"]
        self._reporter.report(
            self.charger_id, {"firmware": {"status": status, "updatedAt": at}}, at
        )
        event: dict[str, Any] = {"status": status, "timestamp": at}
        if payload.get("requestId") is not None:
            event["requestId"] = payload["requestId"]
        self._reporter.event(self.charger_id, "firmware", event)
        log.info("%s: firmware status %s", self.charger_id, status)
        self.events.firmware_status(status, payload.get("requestId"))
        return {}

    async def _log_status_notification(self, payload: dict[str, Any]) -> dict[str, Any]:
        self._reporter.event(
            self.charger_id,
            "diagnostics",
            {
                "kind": "log",
                "status": payload["status"],
                "requestId": payload.get("requestId"),
                "timestamp": now(),
            },
        )
        return {}

    async def _security_event_notification(self, payload: dict[str, Any]) -> dict[str, Any]:
        at = self.clock.read(payload["timestamp"], "SecurityEventNotification")
        log.info("%s: security event %s", self.charger_id, payload["type"])
        self._reporter.event(
            self.charger_id,
            "security",
            {"type": payload["type"], "techInfo": payload.get("techInfo"), "timestamp": at},
        )
        return {}

    async def _sign_certificate(self, payload: dict[str, Any]) -> dict[str, Any]:
        # No certificate authority (as for 1.6): refused, and told as a security event.
        self._reporter.event(
            self.charger_id,
            "security",
            {
                "type": "SignCertificateRejected",
                "techInfo": "no certificate authority",
                "timestamp": now(),
            },
        )
        return {"status": "Rejected"}

    async def _data_transfer(self, payload: dict[str, Any]) -> dict[str, Any]:
        vendor_id = payload["vendorId"]
        known = vendor_id in self.services.data_transfer_vendors
        status = "Accepted" if known else "UnknownVendorId"
        self._reporter.event(
            self.charger_id,
            "dataTransfer",
            {
                "vendorId": vendor_id,
                "messageId": payload.get("messageId"),
                "data": payload.get("data"),
                "status": status,
                "timestamp": now(),
            },
        )
        return {"status": status}

    # --- acknowledged: features the bridge does not have yet -----------------------------------
    def _notification(self, action: str, payload: dict[str, Any]) -> None:
        self._reporter.event(
            self.charger_id,
            "notification",
            {"action": action, "payload": payload, "timestamp": now()},
        )

    def _meter_value_time(self, value: object) -> float:
        return self.clock.read(value, "MeterValues")


def _acknowledge(action: str, answer: Mapping[str, Any]) -> Handler:
    """A handler that publishes the message as a ``notification`` event and answers
    ``answer`` (what the specification has a CSMS without the feature say)."""

    async def handle(endpoint: StationHandler, payload: dict[str, Any]) -> dict[str, Any]:
        endpoint._notification(action, payload)
        return dict(answer)

    return handle


# Acknowledged actions: the answer of a CSMS that does not (yet) act on them.
ACKNOWLEDGED: dict[str, dict[str, Any]] = {
    "NotifyMonitoringReport": {},
    "NotifyChargingLimit": {},
    "ClearedChargingLimit": {},
    # K17: Rejected = the CSMS will not send a charging schedule for these needs.
    "NotifyEVChargingNeeds": {"status": "Rejected"},
    "NotifyEVChargingSchedule": {"status": "Accepted"},
    "ReportChargingProfiles": {},
    "ReservationStatusUpdate": {},
    "NotifyDisplayMessages": {},
    "NotifyCustomerInformation": {},
    "PublishFirmwareStatusNotification": {},
    # M02, M06: no ISO 15118 certificate service behind the bridge.
    "Get15118EVCertificate": {"status": "Failed", "exiResponse": ""},
    "GetCertificateStatus": {"status": "Failed"},
}

StationHandler.handlers = {
    "BootNotification": StationHandler._boot_notification,
    "Heartbeat": StationHandler._heartbeat,
    "StatusNotification": StationHandler._status_notification,
    "NotifyReport": StationHandler._notify_report,
    "NotifyEvent": StationHandler._notify_event,
    "MeterValues": StationHandler._meter_values,
    "Authorize": StationHandler._authorize,
    "TransactionEvent": StationHandler._transaction_event,
    "FirmwareStatusNotification": StationHandler._firmware_status_notification,
    "LogStatusNotification": StationHandler._log_status_notification,
    "SecurityEventNotification": StationHandler._security_event_notification,
    "SignCertificate": StationHandler._sign_certificate,
    "DataTransfer": StationHandler._data_transfer,
    **{action: _acknowledge(action, answer) for action, answer in ACKNOWLEDGED.items()},
}
