"""Operator commands: one route per command name, an OCPP call in the charger's version.

Every call the bridge can send to a charger has its route here. A name means one thing in
both OCPP versions (``reset``, ``unlock``, ``remote-start``...); the body is the request of
the charger's version, which the API reads from the shadow
(``reported.connection.ocppVersion``; none yet means 1.6). For 1.6: the everyday commands
with a hand-written body (``COMMANDS``), the others (reservations, local authorization
lists, smart charging, the security extension's certificates, logs and signed firmware)
with the OCPP request itself as the body, checked against the call's OCPP schema
(``SCHEMA_COMMANDS``, :mod:`api.ocpp_schemas`). For 2.0.1 (``COMMANDS_201``): the 2.0.1
request itself, checked against its 2.0.1 schema; ``get-diagnostics`` keeps its
hand-written body and becomes a GetLog (DiagnosticsLog) to this API's upload endpoint.
``GET /chargers/{id}/commands`` lists what exists for the charger's version.

``POST /chargers/{id}/commands/{name}`` publishes ``{"name", "payload", "clientToken"}`` on
the charger's command topic and waits for the bridge's result (``bridge/README.md``), so
the API needs to know nothing about where the charger is connected. Bodies are the OCPP
fields in camelCase, checked here first (422), then by the bridge against the OCPP schema.

Answers: 200 with the charger's response; 404 unknown charger, or a command its version
does not have; 422 a body that is not a request of the charger's version; 409 offline (the
shadow's ``reported.connection.online``); 502 CALLERROR; 504 no result in time. Every
command that got past validation is written to the audit log as ``command.<name>``.
"""

from __future__ import annotations

import copy
import logging
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from fastapi import APIRouter, Depends, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from pydantic.alias_generators import to_camel

from api.auth import Operator, Principal, Viewer
from api.backends import Backend, get_backend
from api.diagnostics import UPLOAD_PATH
from api.ftp_uploads import ftp_location
from api.ocpp_schemas import OCPP16, OCPP201, request_errors, request_schema
from api.params import Moment
from api.problems import Problem, ProblemError, problem_responses
from api.routes.chargers import find_charger
from chargetwin.audit import Outcome
from chargetwin.command_client import CommandError, CommandTimeoutError
from chargetwin.json_text import JsonTextError, parse_json
from twin.schemas import SECRET_KEYS
from twin.stores import ShadowFilter

log = logging.getLogger(__name__)

router = APIRouter(prefix="/chargers/{charger_id}/commands", tags=["commands"])

BackendDep = Annotated[Backend, Depends(get_backend)]
ConnectorId = Annotated[int, Field(ge=0, le=999, description="0 is the whole charger.")]


class _Body(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")


def _example(example: dict[str, Any]) -> ConfigDict:
    return ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        json_schema_extra={"example": example},
    )


# --- bodies (OCPP 1.6 section 6 field names, camelCase) --------------------------------------
class ResetBody(_Body):
    model_config = _example({"type": "Soft"})
    type: Literal["Hard", "Soft"] = "Soft"


class UnlockBody(_Body):
    model_config = _example({"connectorId": 1})
    connector_id: int = Field(ge=1, le=999)


class TriggerBody(_Body):
    model_config = _example({"requestedMessage": "StatusNotification", "connectorId": 1})
    requested_message: Literal[
        "BootNotification",
        "DiagnosticsStatusNotification",
        "FirmwareStatusNotification",
        "Heartbeat",
        "MeterValues",
        "StatusNotification",
    ]
    connector_id: int | None = Field(None, ge=0, le=999)


class GetDiagnosticsBody(_Body):
    model_config = _example({"retries": 2, "retryInterval": 30})
    location: str | None = Field(
        None,
        max_length=512,
        description="Where the charger uploads; default: this API's upload endpoint with a "
        "one-time grant (docs/firmware.md, Diagnostics).",
    )
    protocol: Literal["http", "ftp"] | None = Field(
        None,
        description="How the charger uploads when no location is given: this API's HTTP "
        "upload endpoint or its FTP endpoint (--ftp-port); default: ftp for the models in "
        "--ftp-models, else http.",
    )
    retries: int | None = Field(None, ge=0, le=100)
    retry_interval: int | None = Field(None, ge=0, le=86_400)
    start_time: Moment | None = None
    stop_time: Moment | None = None


class RemoteStartBody(_Body):
    model_config = _example({"idTag": "04E91C2A", "connectorId": 1})
    id_tag: str = Field(min_length=1, max_length=20)
    connector_id: int | None = Field(None, ge=1, le=999)
    charging_profile: dict[str, Any] | None = Field(
        None, description="A ChargingProfile (OCPP 1.6 section 7.8), TxProfile purpose."
    )


class RemoteStopBody(_Body):
    model_config = _example({"transactionId": 42})
    transaction_id: int = Field(ge=-(2**31), le=2**31 - 1, description="OCPP 1.6 integer.")


class ClearCacheBody(_Body):
    model_config = _example({})


class DataTransferBody(_Body):
    model_config = _example({"vendorId": "com.example", "messageId": "ping", "data": "{}"})
    vendor_id: str = Field(min_length=1, max_length=255)
    message_id: str | None = Field(None, max_length=50)
    data: str | None = None


class GetConfigurationBody(_Body):
    model_config = _example({"key": ["HeartbeatInterval", "MeterValueSampleInterval"]})
    key: list[Annotated[str, Field(max_length=50)]] | None = Field(None, max_length=100)


class ChangeConfigurationBody(_Body):
    model_config = _example({"key": "HeartbeatInterval", "value": "300"})
    key: str = Field(min_length=1, max_length=50)
    value: str = Field(max_length=500)

    @field_validator("key")
    @classmethod
    def _not_a_secret(cls, key: str) -> str:
        if key in SECRET_KEYS:
            raise ValueError(
                f"{key} is a credential: rotate it with POST /chargers/{{id}}/credentials/rotate"
            )
        return key


class ChangeAvailabilityBody(_Body):
    model_config = _example({"connectorId": 1, "type": "Inoperative"})
    connector_id: ConnectorId
    type: Literal["Operative", "Inoperative"]


class UpdateFirmwareBody(_Body):
    model_config = _example(
        {
            "location": "https://firmware.example.com/ct-ac22-1.5.0.bin",
            "retrieveDate": "2026-01-01T02:00:00Z",
            "retries": 3,
            "retryInterval": 60,
        }
    )
    location: str = Field(min_length=1, max_length=2000)
    retrieve_date: Moment
    retries: int | None = Field(None, ge=0, le=100)
    retry_interval: int | None = Field(None, ge=0, le=86_400)


class CommandOut(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        json_schema_extra={
            "example": {"chargerId": "CP-0001", "name": "reset", "response": {"status": "Accepted"}}
        },
    )

    charger_id: str
    name: str
    response: dict[str, Any] = Field(description="The charger's CALLRESULT payload (camelCase).")


@dataclass(frozen=True, slots=True)
class Command:
    name: str
    action: str
    body: type[_Body]
    summary: str


COMMANDS = (
    Command("reset", "Reset", ResetBody, "Reset (reboot) the charger"),
    Command("unlock", "UnlockConnector", UnlockBody, "Unlock a connector"),
    Command("trigger", "TriggerMessage", TriggerBody, "Ask the charger to send a message"),
    Command(
        "get-diagnostics", "GetDiagnostics", GetDiagnosticsBody, "Have the charger upload logs"
    ),
    Command("remote-start", "RemoteStartTransaction", RemoteStartBody, "Start a session"),
    Command("remote-stop", "RemoteStopTransaction", RemoteStopBody, "Stop a session"),
    Command("clear-cache", "ClearCache", ClearCacheBody, "Clear the authorization cache"),
    Command("data-transfer", "DataTransfer", DataTransferBody, "Vendor-specific data"),
    Command(
        "get-configuration", "GetConfiguration", GetConfigurationBody, "Read configuration keys"
    ),
    Command(
        "change-availability",
        "ChangeAvailability",
        ChangeAvailabilityBody,
        "Change availability once (not desired state)",
    ),
    Command("update-firmware", "UpdateFirmware", UpdateFirmwareBody, "Raw UpdateFirmware"),
    Command(
        "change-configuration",
        "ChangeConfiguration",
        ChangeConfigurationBody,
        "Change one configuration key once (not desired state)",
    ),
)


@dataclass(frozen=True, slots=True)
class SchemaCommand:
    """A command whose body is the OCPP request of ``action`` (in ``version``) itself."""

    name: str
    action: str
    summary: str
    example: dict[str, Any]
    version: str = OCPP16


SCHEMA_COMMANDS = (
    SchemaCommand(
        "reserve-now", "ReserveNow", "Reserve a connector for an idTag",
        {"connectorId": 1, "expiryDate": "2026-12-24T18:00:00Z", "idTag": "04E91C2A",
         "reservationId": 7},
    ),
    SchemaCommand(
        "cancel-reservation", "CancelReservation", "Cancel a reservation", {"reservationId": 7}
    ),
    SchemaCommand(
        "get-composite-schedule", "GetCompositeSchedule",
        "Read the charging schedule a connector will follow",
        {"connectorId": 1, "duration": 3600, "chargingRateUnit": "A"},
    ),
    SchemaCommand(
        "set-charging-profile", "SetChargingProfile", "Install a charging profile",
        {"connectorId": 1, "csChargingProfiles": {
            "chargingProfileId": 12, "stackLevel": 1,
            "chargingProfilePurpose": "TxDefaultProfile", "chargingProfileKind": "Absolute",
            "chargingSchedule": {"chargingRateUnit": "A", "chargingSchedulePeriod": [
                {"startPeriod": 0, "limit": 16.0}]}}},
    ),
    SchemaCommand(
        "clear-charging-profile", "ClearChargingProfile", "Remove charging profiles",
        {"id": 12},
    ),
    SchemaCommand(
        "get-local-list-version", "GetLocalListVersion",
        "Read the version of the charger's local authorization list", {},
    ),
    SchemaCommand(
        "send-local-list", "SendLocalList", "Replace or update the local authorization list",
        {"listVersion": 3, "updateType": "Differential", "localAuthorizationList": [
            {"idTag": "04E91C2A", "idTagInfo": {"status": "Accepted"}}]},
    ),
    SchemaCommand(
        "extended-trigger", "ExtendedTriggerMessage",
        "Ask for a message, security extension messages included",
        {"requestedMessage": "SignChargePointCertificate"},
    ),
    SchemaCommand(
        "get-log", "GetLog", "Have the charger upload a diagnostics or security log",
        {"logType": "SecurityLog", "requestId": 1,
         "log": {"remoteLocation": "https://logs.example.com/upload"}},
    ),
    SchemaCommand(
        "signed-update-firmware", "SignedUpdateFirmware", "Raw SignedUpdateFirmware",
        {"requestId": 1, "firmware": {
            "location": "https://firmware.example.com/ct-ac22-1.5.0.bin",
            "retrieveDateTime": "2026-12-24T02:00:00Z",
            "signingCertificate": "-----BEGIN CERTIFICATE-----...",
            "signature": "MEUCIQ..."}},
    ),
    SchemaCommand(
        "install-certificate", "InstallCertificate", "Install a root certificate",
        {"certificateType": "CentralSystemRootCertificate",
         "certificate": "-----BEGIN CERTIFICATE-----..."},
    ),
    SchemaCommand(
        "get-installed-certificate-ids", "GetInstalledCertificateIds",
        "List the root certificates installed", {"certificateType": "ManufacturerRootCertificate"},
    ),
    SchemaCommand(
        "delete-certificate", "DeleteCertificate", "Delete an installed certificate",
        {"certificateHashData": {"hashAlgorithm": "SHA256", "issuerNameHash": "ab12",
                                 "issuerKeyHash": "cd34", "serialNumber": "01"}},
    ),
    SchemaCommand(
        "certificate-signed", "CertificateSigned", "Send the charger its signed certificate",
        {"certificateChain": "-----BEGIN CERTIFICATE-----..."},
    ),
)  # fmt: skip


_ID_TOKEN = {"idToken": "04E91C2A", "type": "ISO14443"}

# OCPP 2.0.1: the same names where the meaning is the same, the request in its 2.0.1 shape
# (bridge/v201/commands.py has the same names). ``get-diagnostics`` is the hand-written
# body above, sent as GetLog; the rest take the 2.0.1 request as it is.
COMMANDS_201: tuple[Command | SchemaCommand, ...] = (
    SchemaCommand(
        "reset", "Reset", "Reset the station or one EVSE (Immediate, or OnIdle: after its "
        "transactions end)", {"type": "OnIdle"}, OCPP201,
    ),
    SchemaCommand(
        "unlock", "UnlockConnector", "Unlock a connector of an EVSE",
        {"evseId": 1, "connectorId": 1}, OCPP201,
    ),
    SchemaCommand(
        "trigger", "TriggerMessage", "Ask the station to send a message",
        {"requestedMessage": "StatusNotification", "evse": {"id": 1, "connectorId": 1}},
        OCPP201,
    ),
    Command(
        "get-diagnostics", "GetLog", GetDiagnosticsBody,
        "Have the station upload its diagnostics log (GetLog DiagnosticsLog)",
    ),
    SchemaCommand(
        "remote-start", "RequestStartTransaction", "Start a session",
        {"idToken": _ID_TOKEN, "remoteStartId": 1, "evseId": 1}, OCPP201,
    ),
    SchemaCommand(
        "remote-stop", "RequestStopTransaction", "Stop a session",
        {"transactionId": "a1f6c3d0-tx-42"}, OCPP201,
    ),
    SchemaCommand("clear-cache", "ClearCache", "Clear the authorization cache", {}, OCPP201),
    SchemaCommand(
        "change-availability", "ChangeAvailability",
        "Take the station (no evse) or one EVSE out of service, or back (one-off; for lasting "
        "availability set desired state)",
        {"operationalStatus": "Inoperative", "evse": {"id": 1}}, OCPP201,
    ),
    SchemaCommand(
        "data-transfer", "DataTransfer", "Vendor-specific data",
        {"vendorId": "com.example", "messageId": "ping", "data": {"hello": 1}}, OCPP201,
    ),
    SchemaCommand(
        "get-variables", "GetVariables", "Read device-model variables",
        {"getVariableData": [{"component": {"name": "OCPPCommCtrlr"},
                              "variable": {"name": "HeartbeatInterval"}}]}, OCPP201,
    ),
    SchemaCommand(
        "get-log", "GetLog", "Have the station upload a diagnostics or security log",
        {"logType": "SecurityLog", "requestId": 1,
         "log": {"remoteLocation": "https://logs.example.com/upload"}}, OCPP201,
    ),
    SchemaCommand(
        "reserve-now", "ReserveNow", "Reserve an EVSE for an idToken",
        {"id": 7, "expiryDateTime": "2026-12-24T18:00:00Z", "idToken": _ID_TOKEN,
         "evseId": 1}, OCPP201,
    ),
    SchemaCommand(
        "cancel-reservation", "CancelReservation", "Cancel a reservation",
        {"reservationId": 7}, OCPP201,
    ),
    SchemaCommand(
        "get-composite-schedule", "GetCompositeSchedule",
        "Read the charging schedule an EVSE will follow",
        {"evseId": 1, "duration": 3600, "chargingRateUnit": "A"}, OCPP201,
    ),
    SchemaCommand(
        "set-charging-profile", "SetChargingProfile", "Install a charging profile",
        {"evseId": 1, "chargingProfile": {
            "id": 12, "stackLevel": 1, "chargingProfilePurpose": "TxDefaultProfile",
            "chargingProfileKind": "Absolute", "chargingSchedule": [{
                "id": 1, "chargingRateUnit": "A",
                "chargingSchedulePeriod": [{"startPeriod": 0, "limit": 16.0}]}]}}, OCPP201,
    ),
    SchemaCommand(
        "clear-charging-profile", "ClearChargingProfile", "Remove charging profiles",
        {"chargingProfileId": 12}, OCPP201,
    ),
    SchemaCommand(
        "get-local-list-version", "GetLocalListVersion",
        "Read the version of the station's local authorization list", {}, OCPP201,
    ),
    SchemaCommand(
        "send-local-list", "SendLocalList", "Replace or update the local authorization list",
        {"versionNumber": 3, "updateType": "Differential", "localAuthorizationList": [
            {"idToken": _ID_TOKEN, "idTokenInfo": {"status": "Accepted"}}]}, OCPP201,
    ),
)  # fmt: skip

# Version -> command name -> command: what ``POST .../commands/{name}`` means for a charger.
CATALOG: dict[str, dict[str, Command | SchemaCommand]] = {
    OCPP16: {c.name: c for c in (*COMMANDS, *SCHEMA_COMMANDS)},
    OCPP201: {c.name: c for c in COMMANDS_201},
}


class CommandInfo(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True)

    name: str
    action: str = Field(description="The OCPP action the charger receives.")
    summary: str
    request_schema: dict[str, Any] = Field(description="JSON schema of the body.")
    example: dict[str, Any]


class CommandsOut(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        json_schema_extra={
            "example": {
                "chargerId": "CS-0001",
                "ocppVersion": "2.0.1",
                "commands": [
                    {
                        "name": "reset",
                        "action": "Reset",
                        "summary": "Reset the station or one EVSE",
                        "requestSchema": {"type": "object"},
                        "example": {"type": "OnIdle"},
                    }
                ],
            }
        },
    )

    charger_id: str
    ocpp_version: str
    commands: list[CommandInfo]


def body_schema(command: Command | SchemaCommand) -> dict[str, Any]:
    """The JSON schema of ``command``'s body."""
    if isinstance(command, SchemaCommand):
        return request_schema(command.action, command.version)
    schema = command.body.model_json_schema(by_alias=True)
    schema.pop("example", None)
    return schema


def body_example(command: Command | SchemaCommand) -> dict[str, Any]:
    if isinstance(command, SchemaCommand):
        return command.example
    extra = command.body.model_config.get("json_schema_extra")
    example = extra.get("example") if isinstance(extra, dict) else None
    return dict(example) if isinstance(example, dict) else {}


def ocpp_payload(body: BaseModel) -> dict[str, Any]:
    """The body as OCPP fields: camelCase, absent optionals left out, times in ISO 8601."""
    payload: dict[str, Any] = body.model_dump(by_alias=True, exclude_none=True, mode="json")
    return payload


async def charger_version(backend: Backend, charger_id: str) -> str:
    """The OCPP version the charger last connected with (1.6 when it never connected)."""
    document = await backend.shadows.get_document(charger_id) or {}
    reported = (document.get("state") or {}).get("reported") or {}
    connection = reported.get("connection") if isinstance(reported, dict) else None
    version = connection.get("ocppVersion") if isinstance(connection, dict) else None
    return OCPP201 if version == OCPP201 else OCPP16


def checked_payload(command: Command | SchemaCommand, body: Any) -> dict[str, Any]:
    """``body`` as the OCPP payload of ``command``, or the 422 that says what is wrong."""
    if isinstance(command, Command):
        try:
            return ocpp_payload(command.body.model_validate(body))
        except ValidationError as exc:
            # Answered as FastAPI answers a body that breaks its model (api.problems).
            raise RequestValidationError(
                [{**e, "loc": ("body", *e["loc"])} for e in exc.errors()]
            ) from exc
    if errors := request_errors(command.action, body, command.version):
        raise Problem(
            422,
            f"the body is not a valid OCPP {command.version} {command.action} request",
            kind="invalid-command",
            errors=errors,
        )
    payload: dict[str, Any] = body
    return payload


def get_log_request(diagnostics: dict[str, Any], request_id: int) -> dict[str, Any]:
    """A get-diagnostics body (with its location) as OCPP 2.0.1 GetLog for the diagnostics
    log: location -> log.remoteLocation, startTime / stopTime -> log.oldestTimestamp /
    latestTimestamp, retries and retryInterval as they are."""
    log_parameters = {"remoteLocation": diagnostics["location"]}
    for ours, theirs in (("startTime", "oldestTimestamp"), ("stopTime", "latestTimestamp")):
        if ours in diagnostics:
            log_parameters[theirs] = diagnostics[ours]
    request = {"logType": "DiagnosticsLog", "requestId": request_id, "log": log_parameters}
    for key in ("retries", "retryInterval"):
        if key in diagnostics:
            request[key] = diagnostics[key]
    return request


async def _ensure_online(backend: Backend, charger_id: str) -> None:
    summaries = await backend.shadows.list(ShadowFilter(charger_ids=(charger_id,), limit=1))
    if not summaries or not summaries[0].online:
        raise Problem(
            409,
            f"charger {charger_id!r} is offline; commands need a connected charger",
            kind="charger-offline",
        )


async def _upload_protocol(backend: Backend, charger_id: str, asked: str | None) -> str:
    """The request's protocol, else FTP for the models configured for it, else HTTP."""
    operations = backend.operations
    assert operations is not None
    if asked is not None:
        return asked
    if operations.ftp_models:
        summaries = await backend.shadows.list(ShadowFilter(charger_ids=(charger_id,), limit=1))
        if summaries and f"{summaries[0].vendor}/{summaries[0].model}" in operations.ftp_models:
            return "ftp"
    return "http"


async def _diagnostics_location(backend: Backend, charger_id: str, protocol: str) -> str:
    operations = backend.operations
    if operations is None:
        raise Problem(422, "give a location: this API keeps no diagnostics uploads")
    if protocol == "ftp" and not operations.ftp_port:
        raise Problem(
            422,
            "this API runs no FTP endpoint: start it with --ftp-port, or ask for http",
            kind="no-ftp-endpoint",
            errors=[ProblemError(pointer="/protocol", message="no FTP endpoint")],
        )
    token = await operations.uploads.grant(charger_id)
    if protocol == "ftp":
        host = urlsplit(operations.public_url).hostname or "127.0.0.1"
        return ftp_location(host, operations.ftp_port, charger_id, token, tls=operations.ftp_tls)
    return f"{operations.public_url}{UPLOAD_PATH}{charger_id}/{token}/"


async def run_command(
    backend: Backend,
    principal: Principal,
    charger_id: str,
    command: Command | SchemaCommand,
    payload: dict[str, Any],
) -> CommandOut:
    await find_charger(backend, charger_id)
    audited = dict(payload)
    action = f"command.{command.name}"

    async def record(outcome: Outcome, status: int, detail: str | None = None) -> None:
        await backend.audit.record(
            actor=principal.name,
            actor_id=principal.token_id,
            role=principal.role.value,
            charger_id=charger_id,
            action=action,
            patch=audited,
            outcome=outcome,
            status=status,
            detail=detail,
        )

    try:
        await _ensure_online(backend, charger_id)
    except Problem as problem:
        await record(Outcome.REJECTED, problem.status, problem.detail)
        raise
    operations = backend.operations
    assert operations is not None
    fallback: str | None = None  # the other upload protocol, when the charger refuses one
    if command.name == "get-diagnostics" and "location" not in payload:
        asked = payload.pop("protocol", None)
        audited.pop("protocol", None)
        protocol = await _upload_protocol(backend, charger_id, asked)
        payload["location"] = await _diagnostics_location(backend, charger_id, protocol)
        audited["location"] = f"(upload grant for {protocol}, folder {charger_id})"
        if asked is None:
            fallback = "ftp" if protocol == "http" and operations.ftp_port else None
            fallback = "http" if protocol == "ftp" else fallback
    payload.pop("protocol", None)  # ours, not OCPP's: with a location given it means nothing
    audited.pop("protocol", None)
    # A 2.0.1 station gets the diagnostics upload as GetLog; its LogStatusNotifications
    # carry this requestId, which the audit entry keeps (docs/ocpp201.md, Commands).
    as_get_log = command.action == "GetLog" and isinstance(command, Command)
    if as_get_log:
        audited["requestId"] = secrets.randbelow(2**31 - 1) + 1

    def wire() -> dict[str, Any]:
        """The payload as sent: built again after a change of upload location."""
        return get_log_request(payload, audited["requestId"]) if as_get_log else payload

    try:
        try:
            result = await operations.commands.send(charger_id, command.name, wire())
        except CommandError as exc:
            if fallback is None or exc.code != 502:
                raise
            # A charger that takes only one protocol refuses the other's location (e.g.
            # "Unsupported protocol"): ask once more with the other, each try audited.
            await record(Outcome.REJECTED, 502, f"{exc.message}; asking again over {fallback}")
            payload["location"] = await _diagnostics_location(backend, charger_id, fallback)
            audited["location"] = f"(upload grant for {fallback}, folder {charger_id})"
            log.info("%s: get-diagnostics refused; asking again over %s", charger_id, fallback)
            result = await operations.commands.send(charger_id, command.name, wire())
    except CommandTimeoutError as exc:
        await record(Outcome.TIMEOUT, 504, exc.message)
        raise Problem(
            504,
            f"no answer from {charger_id} in time; the command may still be carried out",
            kind="command-timeout",
        ) from exc
    except CommandError as exc:
        refusal = _problem_of(exc)
        await record(Outcome.REJECTED, refusal.status, exc.message)
        raise refusal from exc
    log.info("%s: command %s by %s answered", charger_id, command.name, principal.name)
    await record(Outcome.ACCEPTED, 200, _status_of(result.response))
    return CommandOut(charger_id=charger_id, name=command.name, response=result.response)


def _status_of(response: dict[str, Any]) -> str | None:
    status = response.get("status")
    return f"charger answered {status}" if isinstance(status, str) else None


def _problem_of(exc: CommandError) -> Problem:
    if exc.code == 400:
        return Problem(
            422, f"the bridge refused the payload: {exc.message}", kind="invalid-command"
        )
    if exc.code == 502:
        detail = f"the charger answered with an error: {exc.message}"
        return Problem(502, detail, kind="charger-error", title="Charger error")
    if exc.code == 503:
        return Problem(503, exc.message, kind="charger-busy")
    if exc.code == 504:
        return Problem(504, exc.message, kind="command-timeout")
    return Problem(502, f"the bridge answered {exc.code}: {exc.message}", kind="bridge-error")


def _endpoint(name: str) -> Callable[..., Awaitable[CommandOut]]:
    async def endpoint(
        charger_id: str, request: Request, backend: BackendDep, principal: Operator
    ) -> CommandOut:
        await find_charger(backend, charger_id)
        try:
            body = parse_json(await request.body() or b"{}")
        except JsonTextError as exc:
            raise Problem(400, f"the body is not JSON: {exc}", kind="invalid-json") from exc
        version = await charger_version(backend, charger_id)
        command = CATALOG[version].get(name)
        if command is None:
            raise Problem(
                404,
                f"{name} is not a command for OCPP {version} chargers; "
                f"GET /api/v1/chargers/{charger_id}/commands lists them",
                kind="command-not-available",
            )
        payload = checked_payload(command, body)
        return await run_command(backend, principal, charger_id, command, payload)

    endpoint.__name__ = "command_" + name.replace("-", "_")
    return endpoint


def _openapi(name: str) -> dict[str, Any]:
    """The route's body: one schema per OCPP version that has the command."""
    versions = [(v, CATALOG[v][name]) for v in (OCPP16, OCPP201) if name in CATALOG[v]]
    schemas = []
    for version, command in versions:
        schema = copy.deepcopy(body_schema(command))
        schema["title"] = f"{schema.get('title', command.action)} (OCPP {version})"
        schema["description"] = f"For an OCPP {version} charger: {command.action}."
        schemas.append(schema)
    content: dict[str, Any] = {
        "schema": schemas[0] if len(schemas) == 1 else {"oneOf": schemas},
        "examples": {
            f"OCPP {version}": {"value": body_example(command)} for version, command in versions
        },
    }
    return {"requestBody": {"required": False, "content": {"application/json": content}}}


def _description(name: str) -> str:
    actions = "; ".join(
        f"OCPP {v} {CATALOG[v][name].action}" for v in (OCPP16, OCPP201) if name in CATALOG[v]
    )
    return (
        f"Operator. {actions}. The body is the request of the charger's OCPP version "
        "(reported.connection.ocppVersion; 1.6 until it connected). 404 when the charger "
        "is unknown or its version has no such command, 422 when the body is not a valid "
        "request of its version, 409 when it is offline, 502 when it answers with a "
        "CALLERROR, 504 when no answer comes in time."
    )


@router.get(
    "",
    response_model=CommandsOut,
    summary="The commands of a charger's OCPP version",
    description="Viewer. Every command `POST /chargers/{id}/commands/{name}` takes for this "
    "charger's OCPP version (reported.connection.ocppVersion; 1.6 until it connected): its "
    "name, the OCPP action the charger receives, the JSON schema of the body and an example.",
    responses=problem_responses(401, 403, 404),
)
async def list_commands(charger_id: str, backend: BackendDep, _: Viewer) -> CommandsOut:
    await find_charger(backend, charger_id)
    version = await charger_version(backend, charger_id)
    commands = [
        CommandInfo(
            name=c.name,
            action=c.action,
            summary=c.summary,
            request_schema=body_schema(c),
            example=body_example(c),
        )
        for c in CATALOG[version].values()
    ]
    return CommandsOut(charger_id=charger_id, ocpp_version=version, commands=commands)


for _name in dict.fromkeys([*CATALOG[OCPP16], *CATALOG[OCPP201]]):
    _first = CATALOG[OCPP16].get(_name) or CATALOG[OCPP201][_name]
    router.add_api_route(
        f"/{_name}",
        _endpoint(_name),
        methods=["POST"],
        response_model=CommandOut,
        summary=_first.summary,
        description=_description(_name),
        openapi_extra=_openapi(_name),
        responses=problem_responses(400, 401, 403, 404, 409, 422, 502, 503, 504),
    )
