"""Operator commands for an OCPP 2.0.1 station end to end: API -> MQTT -> bridge -> station.

The station is the ``ocpp`` library's ``v201.ChargePoint`` (an implementation we did not
write; it checks every call of the bridge against the official 2.0.1 schemas), over a real
websocket to the real bridge, with the real broker, twin and API (uvicorn).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from e2e_operations import PASSWORD, Platform, platform, reported
from ocpp.exceptions import NotSupportedError
from ocpp.routing import after, on
from ocpp.v201 import ChargePoint, call, call_result
from websockets.asyncio.client import ClientConnection, connect

# A GetCompositeSchedule for this many seconds is answered only after the API gave up.
SLOW_DURATION = 4242
SLOW_ANSWER_S = 4.0


def iso_now() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


class Station(ChargePoint):  # type: ignore[misc]  # the library ships no type information
    """Answers every command a CSMS sends as a well-behaved 2.0.1 station would, recording
    each request (action, snake_case fields as the library hands them)."""

    def __init__(self, charger_id: str, ws: ClientConnection) -> None:
        super().__init__(charger_id, ws, response_timeout=10)
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.accepted = asyncio.Event()
        self.log_statuses: list[str] = []

    def seen(self, action: str) -> list[dict[str, Any]]:
        return [fields for name, fields in self.calls if name == action]

    async def boot(self) -> str:
        answer = await self.call(
            call.BootNotification(
                charging_station={"model": "Wallbox-201", "vendor_name": "VendorX"},
                reason="PowerUp",
            )
        )
        if answer.status == "Accepted":
            self.accepted.set()
        return str(answer.status)

    @on("GetBaseReport")
    def on_get_base_report(self, **_: Any) -> Any:
        return call_result.GetBaseReport(status="NotSupported")  # no device model: boots anyway

    @on("TriggerMessage")
    def on_trigger_message(self, **fields: Any) -> Any:
        self.calls.append(("TriggerMessage", fields))
        return call_result.TriggerMessage(status="Accepted")

    @after("TriggerMessage")
    async def after_trigger_message(self, requested_message: str, **_: Any) -> None:
        if requested_message == "BootNotification":
            await self.boot()
        elif requested_message == "StatusNotification":
            await self.call(
                call.StatusNotification(
                    timestamp=iso_now(), connector_status="Available", evse_id=1, connector_id=1
                )
            )

    @on("Reset")
    def on_reset(self, **fields: Any) -> Any:
        self.calls.append(("Reset", fields))
        return call_result.Reset(status="Scheduled" if fields["type"] == "OnIdle" else "Accepted")

    @on("UnlockConnector")
    def on_unlock(self, **fields: Any) -> Any:
        self.calls.append(("UnlockConnector", fields))
        return call_result.UnlockConnector(status="Unlocked")

    @on("ClearCache")
    def on_clear_cache(self, **fields: Any) -> Any:
        self.calls.append(("ClearCache", fields))
        return call_result.ClearCache(status="Accepted")

    @on("ChangeAvailability")
    def on_change_availability(self, **fields: Any) -> Any:
        self.calls.append(("ChangeAvailability", fields))
        return call_result.ChangeAvailability(status="Accepted")

    @on("RequestStartTransaction")
    def on_start(self, **fields: Any) -> Any:
        self.calls.append(("RequestStartTransaction", fields))
        return call_result.RequestStartTransaction(status="Accepted", transaction_id="tx-201-1")

    @on("RequestStopTransaction")
    def on_stop(self, **fields: Any) -> Any:
        self.calls.append(("RequestStopTransaction", fields))
        return call_result.RequestStopTransaction(status="Accepted")

    @on("DataTransfer")
    def on_data_transfer(self, vendor_id: str, **fields: Any) -> Any:
        self.calls.append(("DataTransfer", {"vendor_id": vendor_id, **fields}))
        if vendor_id == "com.example.unsupported":
            raise NotSupportedError(description="no vendor extension here")
        return call_result.DataTransfer(status="Accepted", data={"echo": fields.get("data")})

    @on("GetVariables")
    def on_get_variables(self, get_variable_data: list[dict[str, Any]], **_: Any) -> Any:
        self.calls.append(("GetVariables", {"get_variable_data": get_variable_data}))
        results = [
            {
                "attribute_status": "Accepted",
                "attribute_value": "300",
                "component": data["component"],
                "variable": data["variable"],
            }
            for data in get_variable_data
        ]
        return call_result.GetVariables(get_variable_result=results)

    @on("GetLog")
    def on_get_log(self, **fields: Any) -> Any:
        self.calls.append(("GetLog", fields))
        return call_result.GetLog(status="Accepted", filename=f"{self.id}-diagnostics.log")

    @after("GetLog")
    async def after_get_log(self, log: dict[str, Any], request_id: int, **_: Any) -> None:
        """Upload as chargers do over HTTP (a PUT of the file to the location + its name)
        and report LogStatusNotification as 2.0.1 N01 says."""
        await self._log_status("Uploading", request_id)
        async with httpx.AsyncClient() as client:
            answer = await client.put(
                log["remote_location"] + f"{self.id}-diagnostics.log",
                content=f"charger={self.id} requestId={request_id}\n".encode(),
            )
        await self._log_status("Uploaded" if answer.is_success else "UploadFailure", request_id)

    async def _log_status(self, status: str, request_id: int) -> None:
        await self.call(call.LogStatusNotification(status=status, request_id=request_id))
        self.log_statuses.append(status)

    @on("ReserveNow")
    def on_reserve_now(self, **fields: Any) -> Any:
        self.calls.append(("ReserveNow", fields))
        return call_result.ReserveNow(status="Accepted")

    @on("CancelReservation")
    def on_cancel_reservation(self, **fields: Any) -> Any:
        self.calls.append(("CancelReservation", fields))
        return call_result.CancelReservation(status="Accepted")

    @on("SetChargingProfile")
    def on_set_charging_profile(self, **fields: Any) -> Any:
        self.calls.append(("SetChargingProfile", fields))
        return call_result.SetChargingProfile(status="Accepted")

    @on("ClearChargingProfile")
    def on_clear_charging_profile(self, **fields: Any) -> Any:
        self.calls.append(("ClearChargingProfile", fields))
        return call_result.ClearChargingProfile(status="Accepted")

    @on("GetCompositeSchedule")
    async def on_get_composite_schedule(self, **fields: Any) -> Any:
        self.calls.append(("GetCompositeSchedule", fields))
        if fields["duration"] == SLOW_DURATION:
            await asyncio.sleep(SLOW_ANSWER_S)
        return call_result.GetCompositeSchedule(status="Rejected")

    @on("GetLocalListVersion")
    def on_get_local_list_version(self, **fields: Any) -> Any:
        self.calls.append(("GetLocalListVersion", fields))
        return call_result.GetLocalListVersion(version_number=3)

    @on("SendLocalList")
    def on_send_local_list(self, **fields: Any) -> Any:
        self.calls.append(("SendLocalList", fields))
        return call_result.SendLocalList(status="Accepted")


@contextlib.asynccontextmanager
async def station_on(ops: Platform) -> AsyncIterator[Station]:
    """A registered 2.0.1 station, booted and online in the shadow; closed afterwards."""
    charger_id = f"CS201-{uuid.uuid4().hex[:8]}"
    registered = await ops.api.post("/chargers", json={"id": charger_id, "password": PASSWORD})
    assert registered.status_code == 201, registered.text
    token = base64.b64encode(f"{charger_id}:{PASSWORD}".encode()).decode()
    ws = await connect(
        f"ws://127.0.0.1:{ops.bridge.port}/ocpp/{charger_id}",
        subprotocols=["ocpp2.0.1"],  # type: ignore[list-item]
        additional_headers={"Authorization": f"Basic {token}"},
        ping_interval=None,
    )
    station = Station(charger_id, ws)
    running = asyncio.create_task(station.start())
    try:
        assert await station.boot() == "Pending"
        async with asyncio.timeout(15):
            await station.accepted.wait()
        await ops.until(
            charger_id,
            lambda d: (
                reported(d).get("connection", {}).get("ocppVersion") == "2.0.1"
                and reported(d)["connection"].get("online")
            ),
        )
        yield station
    finally:
        await ws.close()
        running.cancel()
        with contextlib.suppress(BaseException):
            await running


@pytest.fixture
async def ops(tmp_path: Path, mosquitto_url: str) -> AsyncIterator[Platform]:
    async with platform(tmp_path, mosquitto_url, command_timeout=3.0) as p:
        yield p


# (command name, body, the 2.0.1 action the station gets, a field it must see, the answer)
FAMILIES: list[tuple[str, dict[str, Any], str, tuple[str, Any], dict[str, Any]]] = [
    ("reset", {"type": "OnIdle", "evseId": 1}, "Reset", ("evse_id", 1),
     {"status": "Scheduled"}),
    ("reset", {"type": "Immediate"}, "Reset", ("type", "Immediate"), {"status": "Accepted"}),
    ("unlock", {"evseId": 1, "connectorId": 1}, "UnlockConnector", ("evse_id", 1),
     {"status": "Unlocked"}),
    ("trigger", {"requestedMessage": "StatusNotification", "evse": {"id": 1, "connectorId": 1}},
     "TriggerMessage", ("requested_message", "StatusNotification"), {"status": "Accepted"}),
    ("remote-start", {"idToken": {"idToken": "04E91C2A", "type": "ISO14443"},
                      "remoteStartId": 77, "evseId": 1},
     "RequestStartTransaction", ("remote_start_id", 77),
     {"status": "Accepted", "transactionId": "tx-201-1"}),
    ("remote-stop", {"transactionId": "tx-201-1"}, "RequestStopTransaction",
     ("transaction_id", "tx-201-1"), {"status": "Accepted"}),
    ("clear-cache", {}, "ClearCache", None, {"status": "Accepted"}),
    ("change-availability", {"operationalStatus": "Inoperative", "evse": {"id": 1}},
     "ChangeAvailability", ("operational_status", "Inoperative"), {"status": "Accepted"}),
    ("get-variables", {"getVariableData": [{"component": {"name": "OCPPCommCtrlr"},
                                            "variable": {"name": "HeartbeatInterval"}}]},
     "GetVariables", None,
     {"getVariableResult": [{"attributeStatus": "Accepted", "attributeValue": "300",
                             "component": {"name": "OCPPCommCtrlr"},
                             "variable": {"name": "HeartbeatInterval"}}]}),
    ("set-charging-profile", {"evseId": 1, "chargingProfile": {
        "id": 12, "stackLevel": 1, "chargingProfilePurpose": "TxDefaultProfile",
        "chargingProfileKind": "Absolute", "chargingSchedule": [{
            "id": 1, "chargingRateUnit": "A",
            "chargingSchedulePeriod": [{"startPeriod": 0, "limit": 16.0}]}]}},
     "SetChargingProfile", ("evse_id", 1), {"status": "Accepted"}),
    ("get-composite-schedule", {"evseId": 1, "duration": 3600, "chargingRateUnit": "A"},
     "GetCompositeSchedule", ("duration", 3600), {"status": "Rejected"}),
    ("clear-charging-profile", {"chargingProfileId": 12}, "ClearChargingProfile",
     ("charging_profile_id", 12), {"status": "Accepted"}),
    ("reserve-now", {"id": 7, "expiryDateTime": "2026-12-24T18:00:00Z", "evseId": 1,
                     "idToken": {"idToken": "04E91C2A", "type": "ISO14443"}},
     "ReserveNow", ("id", 7), {"status": "Accepted"}),
    ("cancel-reservation", {"reservationId": 7}, "CancelReservation", ("reservation_id", 7),
     {"status": "Accepted"}),
    ("send-local-list", {"versionNumber": 3, "updateType": "Full", "localAuthorizationList": [
        {"idToken": {"idToken": "04E91C2A", "type": "ISO14443"},
         "idTokenInfo": {"status": "Accepted"}}]},
     "SendLocalList", ("version_number", 3), {"status": "Accepted"}),
    ("get-local-list-version", {}, "GetLocalListVersion", None, {"versionNumber": 3}),
    ("data-transfer", {"vendorId": "com.example", "messageId": "ping", "data": {"n": 1}},
     "DataTransfer", ("vendor_id", "com.example"),
     {"status": "Accepted", "data": {"echo": {"n": 1}}}),
]  # fmt: skip


async def test_every_command_family_reaches_a_2_0_1_station(ops: Platform) -> None:
    async with station_on(ops) as station:
        for name, body, action, field, expected in FAMILIES:
            answer = await ops.api.post(f"/chargers/{station.id}/commands/{name}", json=body)
            assert answer.status_code == 200, (name, answer.text)
            assert answer.json() == {"chargerId": station.id, "name": name, "response": expected}
            seen = station.seen(action)
            assert seen, f"{name}: the station got no {action}"
            if field is not None:
                assert seen[-1][field[0]] == field[1], (name, seen[-1])
        audit = (await ops.api.get(f"/chargers/{station.id}/audit")).json()
        audited = {e["action"] for e in audit if e["outcome"] == "accepted"}
        assert {f"command.{name}" for name, *_ in FAMILIES} <= audited
        # What the answers told is in the shadow (the station reported no device model at
        # boot, so reported.config holds only what get-variables read).
        document = await ops.until(
            station.id,
            lambda d: (
                (reported(d).get("availability") or {}).get("1") == "Inoperative"
                and "config" in reported(d)
            ),
        )
        assert reported(document)["config"] == {"OCPPCommCtrlr/HeartbeatInterval": "300"}


async def test_get_diagnostics_is_a_get_log_upload_to_the_api(ops: Platform) -> None:
    async with station_on(ops) as station:
        answer = await ops.api.post(
            f"/chargers/{station.id}/commands/get-diagnostics", json={"retries": 1}
        )
        assert answer.status_code == 200, answer.text
        assert answer.json()["response"] == {
            "status": "Accepted",
            "filename": f"{station.id}-diagnostics.log",
        }
        (request,) = station.seen("GetLog")
        assert request["log_type"] == "DiagnosticsLog" and request["retries"] == 1
        assert request["log"]["remote_location"].startswith(
            f"{ops.api_url}/api/v1/diagnostics/uploads/{station.id}/"
        )
        listing: list[dict[str, Any]] = []
        for _ in range(100):
            listing = (await ops.api.get(f"/chargers/{station.id}/diagnostics")).json()
            if listing and station.log_statuses[-1:] == ["Uploaded"]:
                break
            await asyncio.sleep(0.1)
        assert [f["name"] for f in listing] == [f"{station.id}-diagnostics.log"]
        assert station.log_statuses == ["Uploading", "Uploaded"]
        stored = await ops.api.get(f"/chargers/{station.id}/diagnostics/{listing[0]['name']}")
        assert f"requestId={request['request_id']}".encode() in stored.content
        audit = (await ops.api.get(f"/chargers/{station.id}/audit")).json()
        # The requestId ties the audit entry to the station's LogStatusNotifications.
        assert audit[0]["patch"]["requestId"] == request["request_id"]
        assert audit[0]["patch"]["location"].startswith("(upload grant for http")


async def test_bad_bodies_callerrors_timeouts_and_offline(
    ops: Platform, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with station_on(ops) as station:
        url = f"/chargers/{station.id}/commands"
        # 1.6-shaped bodies are not 2.0.1 requests: refused before anything is sent.
        for name, body, pointer in [
            ("reset", {"type": "Soft"}, "/type"),
            ("unlock", {"connectorId": 1}, ""),  # evseId missing
            ("remote-start", {"idTag": "04E91C2A"}, ""),
            ("remote-stop", {"transactionId": 42}, "/transactionId"),
        ]:
            refused = await ops.api.post(f"{url}/{name}", json=body)
            assert refused.status_code == 422, (name, refused.text)
            problem = refused.json()
            assert problem["type"].endswith("invalid-command")
            assert "OCPP 2.0.1" in problem["detail"]
            assert pointer in {e["pointer"] for e in problem["errors"]}, problem
        assert not station.seen("Reset") and not station.seen("UnlockConnector")
        # A 1.6-only command does not exist for a 2.0.1 station.
        missing = await ops.api.post(f"{url}/get-configuration", json={})
        assert missing.status_code == 404, missing.text
        assert missing.json()["type"].endswith("command-not-available")

        # A CALLERROR from the station: 502 with its code, as for 1.6. (The station's
        # library logs the exception its handler raised; that log is the station's, kept
        # away from the check that fails a test on our own logged exceptions.)
        with monkeypatch.context() as quiet:
            quiet.setattr(logging.getLogger("ocpp"), "propagate", False)
            error = await ops.api.post(
                f"{url}/data-transfer", json={"vendorId": "com.example.unsupported"}
            )
        assert error.status_code == 502, error.text
        assert error.json()["type"].endswith("charger-error")
        assert "NotSupported" in error.json()["detail"]

        # No answer in time: 504; the station's late answer harms nothing after.
        slow = await ops.api.post(
            f"{url}/get-composite-schedule",
            json={"evseId": 1, "duration": SLOW_DURATION, "chargingRateUnit": "W"},
        )
        assert slow.status_code == 504, slow.text
        assert slow.json()["type"].endswith("command-timeout")
        late = await ops.api.post(f"{url}/clear-cache", json={})
        assert late.status_code == 200, late.text

    # The station is gone: 409 (its version is still known, so the body is checked first).
    await ops.until(station.id, lambda d: reported(d)["connection"]["online"] is False)
    offline = await ops.api.post(f"{url}/reset", json={"type": "Immediate"})
    assert offline.status_code == 409, offline.text
    assert offline.json()["type"].endswith("charger-offline")
    still_checked = await ops.api.post(f"{url}/reset", json={"type": "Hard"})
    assert still_checked.status_code == 422, still_checked.text
