"""The OCPP side of one connection: answers to the central system's calls (section 5).

``ChargePointLink`` is the ocpp library's ``ChargePoint`` for one websocket. Its routes are
built here explicitly instead of through ``@on``, whose global route list other packages of
the process also fill. Answers are computed synchronously from the charger's state; any
follow-up message (StatusNotification after ChangeAvailability, a triggered message, a
session after RemoteStartTransaction) is started from the "after" hook, so it leaves after
the CALLRESULT, and it runs as a task owned by the charger, never by the library.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

from ocpp.exceptions import NotSupportedError
from ocpp.v16 import ChargePoint, call, call_result
from ocpp.v16.enums import (
    Action,
    AvailabilityStatus,
    AvailabilityType,
    CancelReservationStatus,
    ChargePointStatus,
    ChargingProfileStatus,
    ClearCacheStatus,
    ClearChargingProfileStatus,
    ConfigurationStatus,
    DataTransferStatus,
    GetCompositeScheduleStatus,
    MessageTrigger,
    ReadingContext,
    Reason,
    RemoteStartStopStatus,
    ReservationStatus,
    ResetStatus,
    ResetType,
    TriggerMessageStatus,
    UnlockStatus,
    UpdateStatus,
)
from websockets.asyncio.client import ClientConnection

from simulator import diagnostics, firmwares, sessions
from simulator.answers import AnswersFirst
from simulator.configurations import AUTHORIZATION_KEY, authorization_key_password
from simulator.connectors import Connector
from simulator.profiles import Limit, Profile, ProfileError, camel_case
from simulator.states import Charger

__all__ = ["ChargePointLink"]


Handler = Callable[..., Any]


class ChargePointLink(AnswersFirst, ChargePoint):  # type: ignore[misc]  # ocpp ships no type hints
    """One websocket's OCPP 1.6 endpoint for a simulated charger."""

    def __init__(
        self,
        charger: Charger,
        ws: ClientConnection,
        response_timeout: float,
        log: logging.Logger,
    ) -> None:
        super().__init__(charger.id, ws, response_timeout=response_timeout, logger=log)
        self._charger = charger
        self._diagnostics_file = ""
        self._remote_connector: Connector | None = None
        # Set by an "on" handler that accepted, read by its "after" hook: the library runs
        # the two back to back for one call, so one flag per link is enough.
        self._accepted = False
        self._new_password: str | None = None  # an AuthorizationKey accepted, for its hook
        self.route_map = self._routes()

    def _routes(self) -> dict[str, dict[str, Any]]:
        on: dict[str, Handler] = {
            Action.get_configuration: self.on_get_configuration,
            Action.change_configuration: self.on_change_configuration,
            Action.change_availability: self.on_change_availability,
            Action.reset: self.on_reset,
            Action.unlock_connector: self.on_unlock_connector,
            Action.trigger_message: self.on_trigger_message,
            Action.remote_start_transaction: self.on_remote_start_transaction,
            Action.remote_stop_transaction: self.on_remote_stop_transaction,
            Action.clear_cache: self.on_clear_cache,
            Action.data_transfer: self.on_data_transfer,
            Action.get_diagnostics: self.on_get_diagnostics,
            Action.update_firmware: self.on_update_firmware,
            Action.reserve_now: self.on_reserve_now,
            Action.cancel_reservation: self.on_cancel_reservation,
            Action.set_charging_profile: self.on_set_charging_profile,
            Action.clear_charging_profile: self.on_clear_charging_profile,
            Action.get_composite_schedule: self.on_get_composite_schedule,
            Action.get_local_list_version: self.on_get_local_list_version,
            Action.send_local_list: self.on_send_local_list,
        }
        after: dict[str, Handler] = {
            Action.change_configuration: self.after_change_configuration,
            Action.change_availability: self.after_change_availability,
            Action.reset: self.after_reset,
            Action.trigger_message: self.after_trigger_message,
            Action.remote_start_transaction: self.after_remote_start_transaction,
            Action.get_diagnostics: self.after_get_diagnostics,
            Action.update_firmware: self.after_update_firmware,
        }
        routes: dict[str, dict[str, Any]] = {}
        for action, handler in on.items():
            routes[action] = {"_on_action": handler, "_skip_schema_validation": False}
            if action in after:
                routes[action]["_after_action"] = after[action]
        return routes

    async def _handle_call(self, msg: Any) -> Any:
        """Keep the call for inspection (bounded deque), then let the library route it."""
        self._charger.received.append((str(msg.action), dict(msg.payload)))
        if (
            msg.action == Action.set_charging_profile
            and self._charger.profile_answer == "CallError"
        ):
            # Firmware without Smart Charging: a CALLERROR, answered without the library's
            # error log (it is the model's behaviour, not a fault of the simulator).
            error = NotSupportedError("Smart Charging is not supported by this firmware")
            await self._send(msg.create_call_error(error).to_json())
            return None
        return await super()._handle_call(msg)

    def _take_accepted(self) -> bool:
        accepted, self._accepted = self._accepted, False
        return accepted

    def _connector(self, connector_id: int | None) -> Connector | None:
        if connector_id is None or not 0 <= connector_id < len(self._charger.connectors):
            return None
        return self._charger.connectors[connector_id]

    # -- configuration (sections 5.3, 5.8) -----------------------------------------------

    def on_get_configuration(self, key: list[str] | None = None, **_: Any) -> Any:
        known, unknown = self._charger.config.read(key)
        return call_result.GetConfiguration(
            configuration_key=known, unknown_key=unknown if unknown else None
        )

    def on_change_configuration(self, key: str, value: str, **_: Any) -> Any:
        if key == AUTHORIZATION_KEY:
            return self._change_authorization_key(value)
        status = self._charger.config.change(key, value)
        self._charger.log.info("%s: ChangeConfiguration %s=%r: %s", self.id, key, value, status)
        return call_result.ChangeConfiguration(status=status)

    def _change_authorization_key(self, value: str) -> Any:
        """A new HTTP Basic password (1.6 security whitepaper); never logged."""
        password = authorization_key_password(value)
        accepted = password is not None and not self._charger.refuse_authorization_key
        status = ConfigurationStatus.accepted if accepted else ConfigurationStatus.rejected
        self._new_password = password if accepted else None
        self._charger.log.info("%s: ChangeConfiguration AuthorizationKey: %s", self.id, status)
        return call_result.ChangeConfiguration(status=status)

    def after_change_configuration(self, key: str, value: str, **_: Any) -> None:
        password, self._new_password = self._new_password, None
        if key == AUTHORIZATION_KEY and password is not None:
            self._charger.change_password(password)

    # -- availability, reset, unlock (sections 5.2, 5.14, 5.18) --------------------------

    def on_change_availability(self, connector_id: int, type: str, **_: Any) -> Any:
        if self._connector(connector_id) is None:
            return call_result.ChangeAvailability(status=AvailabilityStatus.rejected)
        chargers = self._charger.connectors
        targets = chargers if connector_id == 0 else [chargers[connector_id]]
        operative = type == AvailabilityType.operative
        scheduled = False
        for connector in targets:
            if not operative and connector.id > 0 and connector.in_session:
                # Section 5.2: during a transaction the change waits for its end.
                connector.inoperative_scheduled = True
                scheduled = True
            else:
                connector.operative = operative
                connector.inoperative_scheduled = False
        status = AvailabilityStatus.scheduled if scheduled else AvailabilityStatus.accepted
        self._accepted = True
        return call_result.ChangeAvailability(status=status)

    def after_change_availability(self, connector_id: int, **_: Any) -> None:
        if not self._take_accepted():
            return
        chargers = self._charger.connectors
        targets = chargers if connector_id == 0 else [chargers[connector_id]]
        self._charger.spawn(self._send_statuses([c for c in targets if not c.in_session]))

    async def _send_statuses(self, connectors: list[Connector]) -> None:
        for connector in connectors:
            await self._charger.send_status(connector)

    def on_reset(self, type: str, **_: Any) -> Any:
        return call_result.Reset(status=ResetStatus.accepted)

    def after_reset(self, type: str, **_: Any) -> None:
        self._charger.spawn(self._reset(type == ResetType.hard))

    async def _reset(self, hard: bool) -> None:
        """Soft reset ends transactions properly first; hard reset just drops them."""
        charger = self._charger
        if not hard:
            for connector in charger.connectors:
                connector.request_stop(Reason.soft_reset)
            for _ in range(50):
                if not any(c.in_session for c in charger.connectors):
                    break
                await asyncio.sleep(0.1)
        charger.reboot(Reason.hard_reset if hard else Reason.soft_reset)

    def on_unlock_connector(self, connector_id: int, **_: Any) -> Any:
        connector = self._connector(connector_id)
        if connector is None or connector.id == 0:
            return call_result.UnlockConnector(status=UnlockStatus.not_supported)
        if connector.stuck:
            return call_result.UnlockConnector(status=UnlockStatus.unlock_failed)
        connector.request_stop(Reason.unlock_command)
        return call_result.UnlockConnector(status=UnlockStatus.unlocked)

    # -- trigger (section 5.17) ----------------------------------------------------------

    def on_trigger_message(
        self, requested_message: str, connector_id: int | None = None, **_: Any
    ) -> Any:
        if connector_id is not None and self._connector(connector_id) is None:
            return call_result.TriggerMessage(status=TriggerMessageStatus.rejected)
        if requested_message not in set(MessageTrigger):
            return call_result.TriggerMessage(status=TriggerMessageStatus.not_implemented)
        self._accepted = True
        return call_result.TriggerMessage(status=TriggerMessageStatus.accepted)

    def after_trigger_message(
        self, requested_message: str, connector_id: int | None = None, **_: Any
    ) -> None:
        if self._take_accepted():
            self._charger.spawn(self._triggered(requested_message, connector_id))

    async def _triggered(self, message: str, connector_id: int | None) -> None:
        charger = self._charger
        every = charger.connectors if connector_id is None else [charger.connectors[connector_id]]
        if message == MessageTrigger.boot_notification:
            await charger.call(
                call.BootNotification(
                    charge_point_vendor=charger.model.vendor,
                    charge_point_model=charger.model.model,
                    charge_point_serial_number=charger.serial_number,
                    firmware_version=charger.firmware_version,
                )
            )
        elif message == MessageTrigger.heartbeat:
            await charger.call(call.Heartbeat())
        elif message == MessageTrigger.status_notification:
            await self._send_statuses(every)
        elif message == MessageTrigger.meter_values:
            for connector in every:
                if connector.id > 0:
                    await sessions.send_meter_values(charger, connector, ReadingContext.trigger)
        elif message == MessageTrigger.firmware_status_notification:
            await charger.call(call.FirmwareStatusNotification(status=charger.firmware_status))
        elif message == MessageTrigger.diagnostics_status_notification:
            status = charger.diagnostics_status
            await charger.call(call.DiagnosticsStatusNotification(status=status))

    # -- remote start and stop (sections 5.11, 5.12) -------------------------------------

    def on_remote_start_transaction(
        self, id_tag: str, connector_id: int | None = None, **_: Any
    ) -> Any:
        candidates = self._charger.connectors[1:]
        if connector_id is not None:
            chosen = self._connector(connector_id)
            candidates = [chosen] if chosen is not None and chosen.id > 0 else []
        free = [c for c in candidates if c.can_start()]
        if not free:
            return call_result.RemoteStartTransaction(status=RemoteStartStopStatus.rejected)
        # Claim the connector now, so an automatic session cannot take it meanwhile.
        self._remote_connector = free[0]
        free[0].phase = ChargePointStatus.preparing
        return call_result.RemoteStartTransaction(status=RemoteStartStopStatus.accepted)

    def after_remote_start_transaction(self, id_tag: str, **_: Any) -> None:
        connector, self._remote_connector = self._remote_connector, None
        if connector is None:
            return
        authorize = self._charger.config.boolean("AuthorizeRemoteTxRequests")
        self._charger.spawn(
            sessions.run_session(self._charger, connector, id_tag, authorize=authorize)
        )

    def on_remote_stop_transaction(self, transaction_id: int, **_: Any) -> Any:
        for connector in self._charger.connectors:
            if connector.transaction_id == transaction_id and connector.request_stop(Reason.remote):
                return call_result.RemoteStopTransaction(status=RemoteStartStopStatus.accepted)
        return call_result.RemoteStopTransaction(status=RemoteStartStopStatus.rejected)

    # -- diagnostics and firmware (sections 5.9, 5.19) -----------------------------------

    def on_get_diagnostics(self, location: str, **_: Any) -> Any:
        self._diagnostics_file = diagnostics.diagnostics_file_name(self._charger)
        return call_result.GetDiagnostics(file_name=self._diagnostics_file)

    def after_get_diagnostics(
        self,
        location: str,
        retries: int | None = None,
        retry_interval: int | None = None,
        **_: Any,
    ) -> None:
        upload = diagnostics.upload_diagnostics(
            self._charger, location, self._diagnostics_file, retries, retry_interval
        )
        self._charger.spawn(upload, outlive_connection=True)

    def on_update_firmware(self, location: str, retrieve_date: str, **_: Any) -> Any:
        return call_result.UpdateFirmware()

    def after_update_firmware(
        self,
        location: str,
        retrieve_date: str,
        retries: int | None = None,
        retry_interval: int | None = None,
        **_: Any,
    ) -> None:
        update = firmwares.update_firmware(
            self._charger, location, retrieve_date, retries, retry_interval
        )
        self._charger.spawn(update, outlive_connection=True)

    # -- the rest of Core, and profiles the simulator does not offer ---------------------

    def on_clear_cache(self, **_: Any) -> Any:
        return call_result.ClearCache(status=ClearCacheStatus.accepted)

    def on_data_transfer(self, vendor_id: str, **_: Any) -> Any:
        # Section 5.6: a charger without vendor extensions answers UnknownVendorId.
        return call_result.DataTransfer(status=DataTransferStatus.unknown_vendor_id)

    def on_reserve_now(self, **_: Any) -> Any:
        return call_result.ReserveNow(status=ReservationStatus.rejected)

    def on_cancel_reservation(self, **_: Any) -> Any:
        return call_result.CancelReservation(status=CancelReservationStatus.rejected)

    # -- smart charging (sections 3.13, 5.5, 5.7, 5.16; simulator.profiles) ---------------

    async def on_set_charging_profile(
        self, connector_id: int, cs_charging_profiles: dict[str, Any], **_: Any
    ) -> Any:
        charger = self._charger
        answer = charger.profile_answer
        if answer != ChargingProfileStatus.accepted:
            return call_result.SetChargingProfile(status=ChargingProfileStatus(answer))
        connector = self._connector(connector_id)
        if connector is None:
            return call_result.SetChargingProfile(status=ChargingProfileStatus.rejected)
        if (
            cs_charging_profiles.get("charging_profile_purpose") == "TxProfile"
            and connector.stop is not None
            and not connector.transaction_known.is_set()
        ):
            # A charger reads its StartTransaction.conf before the next frame; here the
            # session may not have run since the answer came: give it that moment.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(1.0):
                    await connector.transaction_known.wait()
        running = {
            c.id: c.transaction_id for c in charger.connectors if c.transaction_id is not None
        }
        try:
            payload = camel_case(cs_charging_profiles)
            profile = Profile.parse(connector_id, payload, time.time())
            charger.profiles.install(profile, running)
        except ProfileError as exc:
            charger.log.info("%s: charging profile rejected: %s", charger.id, exc)
            return call_result.SetChargingProfile(status=ChargingProfileStatus.rejected)
        charger.profiles_changed()
        return call_result.SetChargingProfile(status=ChargingProfileStatus.accepted)

    def on_clear_charging_profile(
        self,
        id: int | None = None,  # the OCPP field's name
        connector_id: int | None = None,
        charging_profile_purpose: str | None = None,
        stack_level: int | None = None,
        **_: Any,
    ) -> Any:
        cleared = self._charger.profiles.clear(
            id, connector_id, charging_profile_purpose, stack_level
        )
        if not cleared:
            return call_result.ClearChargingProfile(status=ClearChargingProfileStatus.unknown)
        self._charger.profiles_changed()
        return call_result.ClearChargingProfile(status=ClearChargingProfileStatus.accepted)

    def on_get_composite_schedule(
        self, connector_id: int, duration: int, charging_rate_unit: str | None = None, **_: Any
    ) -> Any:
        connector = self._connector(connector_id)
        if connector is None or duration < 0:
            return call_result.GetCompositeSchedule(status=GetCompositeScheduleStatus.rejected)
        at = float(int(time.time()))
        tx_start = connector.started_at if connector.transaction_id is not None else None
        rating = Limit(connector.meter.max_amps, connector.meter.phases)
        schedule = self._charger.profiles.composite(
            connector_id, at, duration, charging_rate_unit or "A", tx_start, rating
        )
        return call_result.GetCompositeSchedule(
            status=GetCompositeScheduleStatus.accepted,
            connector_id=connector_id,
            schedule_start=schedule["startSchedule"],
            charging_schedule=schedule,
        )

    def on_get_local_list_version(self, **_: Any) -> Any:
        return call_result.GetLocalListVersion(list_version=0)

    def on_send_local_list(self, **_: Any) -> Any:
        return call_result.SendLocalList(status=UpdateStatus.not_supported)
