"""The OCPP 2.0.1 side of one station's connection: answers to the CSMS's requests.

``StationLink`` is the ``ocpp`` library's ``v201.ChargePoint`` for one websocket, with
routes built here (not through ``@on``, whose route list is global), as the 1.6 link
(:mod:`simulator.links`) does: answers are computed from the station's state, and any
follow-up message (NotifyReport parts after GetBaseReport, statuses after
ChangeAvailability, a triggered message, a session after RequestStartTransaction) starts
from the "after" hook, so it leaves after the CALLRESULT.

Requests answered (part 2): GetBaseReport (B07), GetVariables (B06), SetVariables (B05;
``SecurityCtrlr/BasicAuthPassword`` takes a new Basic-auth password into use at once),
ChangeAvailability (G03, G04), Reset (B11, B12; station only), TriggerMessage (F06),
RequestStartTransaction / RequestStopTransaction (F01, F03), UnlockConnector (F05),
UpdateFirmware (L01), GetLog (N01), GetTransactionStatus (E14), ClearCache (C11),
DataTransfer (P01), SetChargingProfile (K01), ClearChargingProfile (K10) and
GetCompositeSchedule (K08) on the 1.6 charger's profile stack (:mod:`simulator.profiles`;
EVSE N is connector N there). Anything else gets the library's NotImplemented /
NotSupported.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from ocpp.exceptions import NotSupportedError
from ocpp.v16.enums import ChargePointStatus, ReadingContext, Reason
from ocpp.v201 import ChargePoint, call, call_result
from ocpp.v201.enums import Action
from websockets.asyncio.client import ClientConnection

from simulator import stationupdates, transactions
from simulator.answers import AnswersFirst
from simulator.connectors import Connector
from simulator.devicemodels import PASSWORD_LENGTH, Address, report_parts
from simulator.meters import utc_now
from simulator.profiles import (
    CHARGE_POINT_MAX,
    STATION_MAX,
    Limit,
    Profile,
    ProfileError,
    camel_case,
)
from simulator.stationstates import CONNECTOR_ID, Station

__all__ = ["StationLink"]

Handler = Callable[..., Any]
PASSWORD = Address("SecurityCtrlr", "BasicAuthPassword")
TRIGGERS = frozenset(
    {
        "BootNotification",
        "Heartbeat",
        "StatusNotification",
        "MeterValues",
        "TransactionEvent",
        "FirmwareStatusNotification",
        "LogStatusNotification",
    }
)


class StationLink(AnswersFirst, ChargePoint):  # type: ignore[misc]  # ocpp ships no type hints
    """One websocket's OCPP 2.0.1 endpoint for a simulated station."""

    def __init__(
        self,
        station: Station,
        ws: ClientConnection,
        response_timeout: float,
        log: logging.Logger,
        booted: Callable[[], bool],
    ) -> None:
        super().__init__(station.id, ws, response_timeout=response_timeout, logger=log)
        self._station = station
        self._booted = booted
        self._log_file = ""
        self._remote: Connector | None = None
        # Set by an "on" handler that accepted, read by its "after" hook: the library runs
        # the two back to back for one call, so one value per link is enough.
        self._accepted = False
        self._new_password: str | None = None
        self.route_map = self._routes()

    def _routes(self) -> dict[str, dict[str, Any]]:
        on: dict[str, Handler] = {
            Action.get_base_report: self.on_get_base_report,
            Action.get_variables: self.on_get_variables,
            Action.set_variables: self.on_set_variables,
            Action.change_availability: self.on_change_availability,
            Action.reset: self.on_reset,
            Action.trigger_message: self.on_trigger_message,
            Action.request_start_transaction: self.on_request_start_transaction,
            Action.request_stop_transaction: self.on_request_stop_transaction,
            Action.unlock_connector: self.on_unlock_connector,
            Action.update_firmware: self.on_update_firmware,
            Action.get_log: self.on_get_log,
            Action.get_transaction_status: self.on_get_transaction_status,
            Action.clear_cache: self.on_clear_cache,
            Action.data_transfer: self.on_data_transfer,
            Action.set_charging_profile: self.on_set_charging_profile,
            Action.clear_charging_profile: self.on_clear_charging_profile,
            Action.get_composite_schedule: self.on_get_composite_schedule,
        }
        after: dict[str, Handler] = {
            Action.get_base_report: self.after_get_base_report,
            Action.set_variables: self.after_set_variables,
            Action.change_availability: self.after_change_availability,
            Action.reset: self.after_reset,
            Action.trigger_message: self.after_trigger_message,
            Action.request_start_transaction: self.after_request_start_transaction,
            Action.update_firmware: self.after_update_firmware,
            Action.get_log: self.after_get_log,
        }
        routes: dict[str, dict[str, Any]] = {}
        for action, handler in on.items():
            routes[action] = {"_on_action": handler, "_skip_schema_validation": False}
            if action in after:
                routes[action]["_after_action"] = after[action]
        return routes

    async def _handle_call(self, msg: Any) -> Any:
        """Keep the call for inspection (bounded deque), then let the library route it."""
        self._station.received.append((str(msg.action), dict(msg.payload)))
        if (
            msg.action == Action.set_charging_profile
            and self._station.profile_answer == "CallError"
        ):
            # Firmware without smart charging: a CALLERROR, as the 1.6 link sends it.
            error = NotSupportedError("Smart charging is not supported by this firmware")
            await self._send(msg.create_call_error(error).to_json())
            return None
        return await super()._handle_call(msg)

    def _take_accepted(self) -> bool:
        accepted, self._accepted = self._accepted, False
        return accepted

    def _evse(self, evse_id: int | None) -> Connector | None:
        """EVSE ``evse_id`` (1..n; the shared connector state of the same number)."""
        connectors = self._station.connectors
        if evse_id is None or not 0 < evse_id < len(connectors):
            return None
        return connectors[evse_id]

    # -- device model (B05-B07) ----------------------------------------------------------

    def on_get_base_report(self, request_id: int, report_base: str, **_: Any) -> Any:
        if not self._station.device_model.report(report_base):
            return call_result.GetBaseReport(status="EmptyResultSet")
        self._accepted = True
        return call_result.GetBaseReport(status="Accepted")

    def after_get_base_report(self, request_id: int, report_base: str, **_: Any) -> None:
        if self._take_accepted():
            self._station.spawn(self._report(request_id, report_base))

    async def _report(self, request_id: int, report_base: str) -> None:
        """NotifyReport parts of at most ``DeviceDataCtrlr/ItemsPerMessage:GetReport``."""
        model = self._station.device_model
        _, items = model.get(
            Address("DeviceDataCtrlr", "ItemsPerMessage", variable_instance="GetReport")
        )
        per_part = int(items or 20)
        parts = report_parts(model.report(report_base), per_part)
        generated = utc_now()
        for seq_no, part in enumerate(parts):
            await self._station.call(
                call.NotifyReport(
                    request_id=request_id,
                    generated_at=generated,
                    seq_no=seq_no,
                    report_data=part or None,
                    tbc=seq_no < len(parts) - 1,
                )
            )

    def on_get_variables(self, get_variable_data: list[dict[str, Any]], **_: Any) -> Any:
        results = []
        for item in get_variable_data:
            kind = item.get("attribute_type") or "Actual"
            status, value = self._station.device_model.get(
                Address.of(item["component"], item["variable"]), kind
            )
            result: dict[str, Any] = {
                "attribute_status": status,
                "attribute_type": kind,
                "component": item["component"],
                "variable": item["variable"],
            }
            if value is not None:
                result["attribute_value"] = value
            results.append(result)
        return call_result.GetVariables(get_variable_result=results)

    def on_set_variables(self, set_variable_data: list[dict[str, Any]], **_: Any) -> Any:
        results = []
        for item in set_variable_data:
            kind = item.get("attribute_type") or "Actual"
            address = Address.of(item["component"], item["variable"])
            value = str(item["attribute_value"])
            if address == PASSWORD and kind == "Actual":
                status, why = self._set_password(value)
            else:
                status, why = self._station.device_model.set(address, value, kind)
            self._station.log.info("%s: SetVariables %s=%r: %s", self.id, address, value, status)
            result: dict[str, Any] = {
                "attribute_type": kind,
                "attribute_status": status,
                "component": item["component"],
                "variable": item["variable"],
            }
            if why is not None:
                result["attribute_status_info"] = {
                    "reason_code": "InvalidValue",
                    "additional_info": why[:512],
                }
            results.append(result)
        return call_result.SetVariables(set_variable_result=results)

    def _set_password(self, value: str) -> tuple[str, str | None]:
        """A new Basic-auth password (part 2, A01); never logged."""
        low, high = PASSWORD_LENGTH
        if self._station.refuse_authorization_key:
            return "Rejected", None
        if not low <= len(value) <= high:
            return "Rejected", f"a password has {low} to {high} characters"
        self._new_password = value
        return "Accepted", None

    def after_set_variables(self, **_: Any) -> None:
        password, self._new_password = self._new_password, None
        if password is not None:
            self._station.change_password(password)

    # -- availability and reset (G03, G04, B11, B12) -------------------------------------

    def _targets(self, evse: dict[str, Any] | None) -> list[Connector] | None:
        station = self._station
        if evse is None:
            return station.connectors[1:]
        chosen = self._evse(evse.get("id"))
        connector_id = evse.get("connector_id")
        if chosen is None or connector_id not in (None, CONNECTOR_ID):
            return None
        return [chosen]

    def on_change_availability(
        self, operational_status: str, evse: dict[str, Any] | None = None, **_: Any
    ) -> Any:
        targets = self._targets(evse)
        if targets is None:
            return call_result.ChangeAvailability(status="Rejected")
        operative = operational_status == "Operative"
        scheduled = False
        for connector in targets:
            if not operative and connector.in_session:
                # G03.FR.05: during a transaction the change waits for its end.
                connector.inoperative_scheduled = True
                scheduled = True
            else:
                connector.operative = operative
                connector.inoperative_scheduled = False
        self._accepted = True
        return call_result.ChangeAvailability(status="Scheduled" if scheduled else "Accepted")

    def after_change_availability(self, evse: dict[str, Any] | None = None, **_: Any) -> None:
        targets = self._targets(evse)
        if self._take_accepted() and targets is not None:
            self._station.spawn(self._send_statuses([c for c in targets if not c.in_session]))

    async def _send_statuses(self, connectors: list[Connector]) -> None:
        for connector in connectors:
            await self._station.send_status(connector)

    def on_reset(self, type: str, evse_id: int | None = None, **_: Any) -> Any:
        if evse_id is not None:
            return call_result.Reset(status="Rejected")  # only the whole station resets
        busy = any(c.in_session for c in self._station.connectors)
        self._accepted = True
        return call_result.Reset(status="Scheduled" if type == "OnIdle" and busy else "Accepted")

    def after_reset(self, type: str, **_: Any) -> None:
        if self._take_accepted():
            self._station.spawn(self._reset(immediate=type == "Immediate"))

    async def _reset(self, *, immediate: bool) -> None:
        """Immediate ends transactions (ImmediateReset) first; OnIdle waits for them."""
        station = self._station
        if immediate:
            for connector in station.connectors:
                connector.request_stop(Reason.hard_reset)
        # Immediate: the Ended events get 5 s to leave; OnIdle: as long as sessions last.
        waited = 0.0
        while any(c.in_session for c in station.connectors) and not (immediate and waited >= 5):
            await asyncio.sleep(0.1)
            waited += 0.1
        station.boot_reason = "RemoteReset"
        station.reboot(Reason.hard_reset)

    # -- trigger (F06) -------------------------------------------------------------------

    def on_trigger_message(
        self, requested_message: str, evse: dict[str, Any] | None = None, **_: Any
    ) -> Any:
        if requested_message not in TRIGGERS:
            return call_result.TriggerMessage(status="NotImplemented")
        if evse is not None and self._targets(evse) is None:
            return call_result.TriggerMessage(status="Rejected")
        if requested_message == "BootNotification" and self._booted():
            # F06.FR.17: a station already Accepted does not boot again on request.
            return call_result.TriggerMessage(status="Rejected")
        self._accepted = True
        return call_result.TriggerMessage(status="Accepted")

    def after_trigger_message(
        self, requested_message: str, evse: dict[str, Any] | None = None, **_: Any
    ) -> None:
        if not self._take_accepted():
            return
        if requested_message == "BootNotification":
            self._station.boot_reason = "Triggered"
            self._station.boot_wanted.set()  # the boot loop sends it
            return
        targets = self._targets(evse) or []
        self._station.spawn(self._triggered(requested_message, targets))

    async def _triggered(self, message: str, targets: list[Connector]) -> None:
        station = self._station
        if message == "Heartbeat":
            await station.call(call.Heartbeat())
        elif message == "StatusNotification":
            await self._send_statuses(targets)
        elif message == "MeterValues":
            for connector in targets:
                await station.send_meter_sample(connector, ReadingContext.trigger)
        elif message == "TransactionEvent":
            for connector in targets:
                await transactions.trigger_event(station, connector)
        elif message == "FirmwareStatusNotification":
            request_id = None if station.firmware_state == "Idle" else station.firmware_request_id
            await station.call(
                call.FirmwareStatusNotification(
                    status=station.firmware_state, request_id=request_id
                )
            )
        elif message == "LogStatusNotification":
            request_id = None if station.log_status == "Idle" else station.log_request_id
            await station.call(
                call.LogStatusNotification(status=station.log_status, request_id=request_id)
            )

    # -- remote start and stop, unlock (F01, F03, F05) ------------------------------------

    def on_request_start_transaction(
        self, id_token: dict[str, Any], remote_start_id: int, evse_id: int | None = None, **_: Any
    ) -> Any:
        candidates = self._station.connectors[1:]
        if evse_id is not None:
            chosen = self._evse(evse_id)
            candidates = [chosen] if chosen is not None else []
        free = [c for c in candidates if c.can_start()]
        if not free:
            return call_result.RequestStartTransaction(status="Rejected")
        # Claim the EVSE now, so an automatic session cannot take it meanwhile.
        self._remote = free[0]
        free[0].phase = ChargePointStatus.preparing
        return call_result.RequestStartTransaction(status="Accepted")

    def after_request_start_transaction(
        self, id_token: dict[str, Any], remote_start_id: int, **_: Any
    ) -> None:
        connector, self._remote = self._remote, None
        if connector is None:
            return
        station = self._station
        authorize = station.device_model.boolean("AuthCtrlr", "AuthorizeRemoteStart")
        session = transactions.run_transaction(
            station,
            connector,
            str(id_token["id_token"]),
            authorize=authorize,
            remote_start_id=remote_start_id,
        )
        station.spawn(session)

    def on_request_stop_transaction(self, transaction_id: str, **_: Any) -> Any:
        station = self._station
        for connector in station.connectors[1:]:
            if station.transaction_id(connector) == transaction_id and connector.request_stop(
                Reason.remote
            ):
                return call_result.RequestStopTransaction(status="Accepted")
        return call_result.RequestStopTransaction(status="Rejected")

    def on_unlock_connector(self, evse_id: int, connector_id: int, **_: Any) -> Any:
        connector = self._evse(evse_id)
        if connector is None or connector_id != CONNECTOR_ID:
            return call_result.UnlockConnector(status="UnknownConnector")
        if connector.transaction_id is not None and connector.id_tag is not None:
            # F05.FR.02: an authorized transaction is stopped with RequestStopTransaction.
            return call_result.UnlockConnector(status="OngoingAuthorizedTransaction")
        if connector.stuck:
            return call_result.UnlockConnector(status="UnlockFailed")
        connector.request_stop(Reason.unlock_command)
        return call_result.UnlockConnector(status="Unlocked")

    def on_get_transaction_status(self, transaction_id: str | None = None, **_: Any) -> Any:
        station = self._station
        ongoing = any(station.transaction_id(c) == transaction_id for c in station.connectors[1:])
        if transaction_id is None:
            return call_result.GetTransactionStatus(messages_in_queue=False)
        return call_result.GetTransactionStatus(messages_in_queue=False, ongoing_indicator=ongoing)

    # -- smart charging (K01, K08, K10; simulator.profiles) ---------------------------------

    def on_set_charging_profile(
        self, evse_id: int, charging_profile: dict[str, Any], **_: Any
    ) -> Any:
        station = self._station
        answer = station.profile_answer
        if answer != "Accepted":
            # 2.0.1 knows Accepted and Rejected only: a model without smart charging
            # rejects with that reason.
            return call_result.SetChargingProfile(
                status="Rejected", status_info={"reason_code": answer[:20]}
            )
        if evse_id != 0 and self._evse(evse_id) is None:
            return _rejected("UnknownEVSE", f"no EVSE {evse_id}")
        running = {
            c.id: tx
            for c in station.connectors[1:]
            if (tx := station.transaction_id(c)) is not None
        }
        try:
            profile = Profile.parse_201(evse_id, camel_case(charging_profile), time.time())
            station.profiles.install(profile, running)
        except ProfileError as exc:
            station.log.info("%s: charging profile rejected: %s", station.id, exc)
            return _rejected("InvalidProfile", str(exc))
        station.profiles_changed()
        return call_result.SetChargingProfile(status="Accepted")

    def on_clear_charging_profile(
        self,
        charging_profile_id: int | None = None,
        charging_profile_criteria: dict[str, Any] | None = None,
        **_: Any,
    ) -> Any:
        criteria = charging_profile_criteria or {}
        purpose = criteria.get("charging_profile_purpose")
        cleared = self._station.profiles.clear(
            charging_profile_id,
            criteria.get("evse_id"),
            CHARGE_POINT_MAX if purpose == STATION_MAX else purpose,
            criteria.get("stack_level"),
        )
        if not cleared:
            return call_result.ClearChargingProfile(status="Unknown")
        self._station.profiles_changed()
        return call_result.ClearChargingProfile(status="Accepted")

    def on_get_composite_schedule(
        self, duration: int, evse_id: int, charging_rate_unit: str | None = None, **_: Any
    ) -> Any:
        station = self._station
        connector = self._evse(evse_id) if evse_id != 0 else station.connectors[0]
        if connector is None or duration < 0:
            return _rejected("UnknownEVSE", f"no EVSE {evse_id}", composite=True)
        at = float(int(time.time()))
        tx_start = connector.started_at if connector.transaction_id is not None else None
        rating = Limit(connector.meter.max_amps, connector.meter.phases)
        schedule = station.profiles.composite(
            evse_id, at, duration, charging_rate_unit or "A", tx_start, rating
        )
        return call_result.GetCompositeSchedule(
            status="Accepted",
            schedule={
                "evse_id": evse_id,
                "duration": schedule["duration"],
                "schedule_start": schedule["startSchedule"],
                "charging_rate_unit": schedule["chargingRateUnit"],
                "charging_schedule_period": [
                    {
                        "start_period": p["startPeriod"],
                        "limit": p["limit"],
                        "number_phases": p["numberPhases"],
                    }
                    for p in schedule["chargingSchedulePeriod"]
                ],
            },
        )

    # -- firmware and log (L01, N01) -----------------------------------------------------

    def on_update_firmware(self, request_id: int, firmware: dict[str, Any], **_: Any) -> Any:
        return call_result.UpdateFirmware(status="Accepted")

    def after_update_firmware(
        self,
        request_id: int,
        firmware: dict[str, Any],
        retries: int | None = None,
        retry_interval: int | None = None,
        **_: Any,
    ) -> None:
        update = stationupdates.update_firmware(
            self._station,
            request_id,
            str(firmware["location"]),
            str(firmware["retrieve_date_time"]),
            signed=bool(firmware.get("signature")),
            retries=retries,
            retry_interval=retry_interval,
        )
        self._station.spawn(update, outlive_connection=True)

    def on_get_log(self, log: dict[str, Any], log_type: str, request_id: int, **_: Any) -> Any:
        self._log_file = stationupdates.log_file_name(self._station)
        return call_result.GetLog(status="Accepted", filename=self._log_file)

    def after_get_log(
        self,
        log: dict[str, Any],
        request_id: int,
        retries: int | None = None,
        retry_interval: int | None = None,
        **_: Any,
    ) -> None:
        upload = stationupdates.upload_log(
            self._station,
            request_id,
            str(log["remote_location"]),
            self._log_file,
            retries,
            retry_interval,
        )
        self._station.spawn(upload, outlive_connection=True)

    # -- the rest ------------------------------------------------------------------------

    def on_clear_cache(self, **_: Any) -> Any:
        return call_result.ClearCache(status="Accepted")

    def on_data_transfer(self, vendor_id: str, **_: Any) -> Any:
        # P01: a station without vendor extensions answers UnknownVendorId.
        return call_result.DataTransfer(status="UnknownVendorId")


def _rejected(reason: str, why: str, *, composite: bool = False) -> Any:
    """Rejected with a StatusInfoType (part 2, 2.50): a reason code and the detail."""
    info = {"reason_code": reason, "additional_info": why[:512]}
    if composite:
        return call_result.GetCompositeSchedule(status="Rejected", status_info=info)
    return call_result.SetChargingProfile(status="Rejected", status_info=info)
