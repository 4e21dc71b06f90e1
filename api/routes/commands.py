"""Operator commands: one route per command, each an OCPP 1.6 call through the bridge.

Every call the bridge can send to a charger has its route here: the everyday ones with a
hand-written body (``COMMANDS``), the others (reservations, local authorization lists,
smart charging, the security extension's certificates, logs and signed firmware) with the
OCPP request itself as the body, checked against the call's OCPP schema
(``SCHEMA_COMMANDS``, :mod:`api.ocpp_schemas`).

``POST /chargers/{id}/commands/{name}`` publishes ``{"name", "payload", "clientToken"}`` on
the charger's command topic and waits for the bridge's result (``bridge/README.md``), so
the API needs to know nothing about where the charger is connected. Bodies are the OCPP
fields in camelCase, checked here first (422), then by the bridge against the OCPP schema.

Answers: 200 with the charger's response; 404 unknown charger; 409 offline (the shadow's
``reported.connection.online``); 502 CALLERROR; 504 no result in time. Every command that
got past validation is written to the audit log as ``command.<name>``.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic.alias_generators import to_camel

from api.auth import Operator, Principal
from api.backends import Backend, get_backend
from api.diagnostics import UPLOAD_PATH
from api.ftp_uploads import ftp_location
from api.ocpp_schemas import openapi_body, request_errors
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
    """A command whose body is the OCPP request of ``action`` itself."""

    name: str
    action: str
    summary: str
    example: dict[str, Any]


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


def ocpp_payload(body: BaseModel) -> dict[str, Any]:
    """The body as OCPP fields: camelCase, absent optionals left out, times in ISO 8601."""
    payload: dict[str, Any] = body.model_dump(by_alias=True, exclude_none=True, mode="json")
    return payload


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
        return ftp_location(host, operations.ftp_port, charger_id, token)
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
    try:
        try:
            result = await operations.commands.send(charger_id, command.name, payload)
        except CommandError as exc:
            if fallback is None or exc.code != 502:
                raise
            # A charger that takes only one protocol refuses the other's location (e.g.
            # "Unsupported protocol"): ask once more with the other, each try audited.
            await record(Outcome.REJECTED, 502, f"{exc.message}; asking again over {fallback}")
            payload["location"] = await _diagnostics_location(backend, charger_id, fallback)
            audited["location"] = f"(upload grant for {fallback}, folder {charger_id})"
            log.info("%s: get-diagnostics refused; asking again over %s", charger_id, fallback)
            result = await operations.commands.send(charger_id, command.name, payload)
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


def _endpoint(command: Command) -> Callable[..., Awaitable[CommandOut]]:
    async def endpoint(
        charger_id: str, backend: BackendDep, principal: Operator, body: Any
    ) -> CommandOut:
        body = body if body is not None else command.body()
        return await run_command(backend, principal, charger_id, command, ocpp_payload(body))

    # FastAPI reads the body model from the signature; each route gets its own.
    signature = inspect.signature(endpoint)
    optional = all(not f.is_required() for f in command.body.model_fields.values())
    parameters = [
        p.replace(
            annotation=command.body | None if optional else command.body,
            default=None if optional else inspect.Parameter.empty,
        )
        if p.name == "body"
        else p
        for p in signature.parameters.values()
    ]
    endpoint.__signature__ = signature.replace(parameters=parameters)  # type: ignore[attr-defined]
    endpoint.__name__ = "command_" + command.name.replace("-", "_")
    return endpoint


def _schema_endpoint(command: SchemaCommand) -> Callable[..., Awaitable[CommandOut]]:
    async def endpoint(
        charger_id: str, request: Request, backend: BackendDep, principal: Operator
    ) -> CommandOut:
        try:
            payload = parse_json(await request.body() or b"{}")
        except JsonTextError as exc:
            raise Problem(400, f"the body is not JSON: {exc}", kind="invalid-json") from exc
        if errors := request_errors(command.action, payload):
            raise Problem(
                422,
                f"the body is not a valid OCPP 1.6 {command.action} request",
                kind="invalid-command",
                errors=errors,
            )
        return await run_command(backend, principal, charger_id, command, payload)

    endpoint.__name__ = "command_" + command.name.replace("-", "_")
    return endpoint


for _schema_command in SCHEMA_COMMANDS:
    router.add_api_route(
        f"/{_schema_command.name}",
        _schema_endpoint(_schema_command),
        methods=["POST"],
        response_model=CommandOut,
        summary=_schema_command.summary,
        description=f"Operator. OCPP 1.6 {_schema_command.action}: the body is the OCPP "
        "request (its JSON schema below, as the specification's). 409 when the charger is "
        "offline, 422 when the body breaks the schema, 502 when the charger answers with a "
        "CALLERROR, 504 when no answer comes in time.",
        openapi_extra=openapi_body(_schema_command.action, _schema_command.example),
        responses=problem_responses(400, 401, 403, 404, 409, 422, 502, 503, 504),
    )

for _command in COMMANDS:
    router.add_api_route(
        f"/{_command.name}",
        _endpoint(_command),
        methods=["POST"],
        response_model=CommandOut,
        summary=_command.summary,
        description=f"Operator. OCPP 1.6 {_command.action}. 409 when the charger is offline, "
        "502 when it answers with a CALLERROR, 504 when no answer comes in time.",
        responses=problem_responses(400, 401, 403, 404, 409, 422, 502, 503, 504),
    )
