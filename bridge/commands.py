"""Operator commands over MQTT: ``.../commands`` in, an OCPP call, ``.../commands/result`` out.

A request is ``{"name", "payload" (OCPP fields, camelCase), "clientToken"}``. The payload is
checked against the schema of the call in the charger's OCPP version (1.6 here, 2.0.1 with
:data:`bridge.v201.commands.COMMANDS`) before anything is sent, so a bad payload
answers 400 without bothering the charger; no answer in time answers 504 and a CALLERROR
502. Each command runs as a task owned by the connection, so the MQTT handler returns at
once (the broker gets its PUBACK) and a disconnect cancels what is still running.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol

from bridge.errors import CallErrorReceived, OutgoingCallError
from bridge.reconcilers import Reconciler
from bridge.reports import Reporter
from bridge.tasks import TaskSet

log = logging.getLogger(__name__)


class Request(Protocol):
    def __call__(
        self,
        action: str,
        payload: dict[str, Any],
        timeout: float | None = None,
        *,
        include_wait: bool = False,
    ) -> Awaitable[dict[str, Any]]: ...


# Command name -> OCPP 1.6 action (core, firmware, reservation, smart charging, local list,
# remote trigger, and the 1.6 security extension).
COMMANDS: dict[str, str] = {
    "reset": "Reset",
    "unlock": "UnlockConnector",
    "trigger": "TriggerMessage",
    "clear-cache": "ClearCache",
    "get-configuration": "GetConfiguration",
    "change-configuration": "ChangeConfiguration",
    "change-availability": "ChangeAvailability",
    "remote-start": "RemoteStartTransaction",
    "remote-stop": "RemoteStopTransaction",
    "data-transfer": "DataTransfer",
    "get-diagnostics": "GetDiagnostics",
    "update-firmware": "UpdateFirmware",
    "reserve-now": "ReserveNow",
    "cancel-reservation": "CancelReservation",
    "get-composite-schedule": "GetCompositeSchedule",
    "set-charging-profile": "SetChargingProfile",
    "clear-charging-profile": "ClearChargingProfile",
    "get-local-list-version": "GetLocalListVersion",
    "send-local-list": "SendLocalList",
    "extended-trigger": "ExtendedTriggerMessage",
    "get-log": "GetLog",
    "signed-update-firmware": "SignedUpdateFirmware",
    "install-certificate": "InstallCertificate",
    "get-installed-certificate-ids": "GetInstalledCertificateIds",
    "delete-certificate": "DeleteCertificate",
    "certificate-signed": "CertificateSigned",
}


# What a command changed on the charger, told to the connection: (action, payload, answer).
Mirror = Callable[[str, dict[str, Any], dict[str, Any]], None]
# The request of the charger's version for (name, payload); ValueError: cannot be (400).
Adapt = Callable[[str, dict[str, Any]], dict[str, Any]]


def mirror_16(reconciler: Reconciler) -> Mirror:
    """What a 1.6 command changed on the charger goes into reported state too; a refusal
    stays in the command's answer (see :meth:`Reconciler.command_config`)."""

    def mirror(action: str, payload: dict[str, Any], answer: dict[str, Any]) -> None:
        status = str(answer.get("status"))
        if action == "ChangeConfiguration":
            reconciler.command_config(str(payload["key"]), str(payload["value"]), status)
        elif action == "ChangeAvailability":
            reconciler.command_availability(
                str(payload["connectorId"]), str(payload["type"]), status
            )
        elif action == "GetConfiguration":
            reconciler.record_configuration(answer)
        elif action in ("UpdateFirmware", "SignedUpdateFirmware") and reconciler.firmware:
            reconciler.firmware.one_off()

    return mirror


class CommandRunner:
    """Runs one charger's commands and publishes their results.

    ``commands`` maps the command names of the charger's OCPP version to their actions;
    ``mirror`` learns what each answered command changed (none: nothing to mirror);
    ``adapt`` turns a payload written for another version into this one's, where the
    meaning is exact (2.0.1: :func:`bridge.v201.commands.adapt`).
    """

    def __init__(
        self,
        charger_id: str,
        request: Request,
        reporter: Reporter,
        mirror: Mirror | None,
        tasks: TaskSet,
        *,
        commands: Mapping[str, str] = COMMANDS,
        adapt: Adapt | None = None,
        timeout: float = 30.0,
        max_running: int = 64,
        accepted: asyncio.Event | None = None,
    ) -> None:
        self.charger_id = charger_id
        self._request = request
        self._reporter = reporter
        self._mirror = mirror
        self._commands = commands
        self._adapt = adapt
        self._tasks = tasks
        self._timeout = timeout
        self._max_running = max_running
        self._running = 0
        self._accepted = accepted

    def submit(self, raw: bytes) -> None:
        """Check one request and start it; a bad request is answered at once."""
        try:
            request = json.loads(raw)
        except ValueError:
            self._error(None, None, 400, "request is not valid JSON")
            return
        if not isinstance(request, dict):
            self._error(None, None, 400, "request must be a JSON object")
            return
        token = request.get("clientToken")
        name = request.get("name")
        payload = request.get("payload", {})
        if not isinstance(name, str) or name not in self._commands:
            known = ", ".join(sorted(self._commands))
            self._error(token, name, 400, f"unknown command {name!r}; known: {known}")
            return
        if not isinstance(payload, dict):
            self._error(token, name, 400, "payload must be a JSON object")
            return
        if self._adapt is not None:
            try:
                payload = self._adapt(name, payload)
            except ValueError as exc:
                self._error(token, name, 400, str(exc))
                return
        if self._accepted is not None and not self._accepted.is_set() and name != "trigger":
            # OCPP 1.6 section 4.2 (2.0.1 B02.FR.01): nothing is asked of a charger that is
            # not accepted, but a TriggerMessage may ask it to boot.
            self._error(token, name, 409, "charger not accepted yet: no BootNotification")
            return
        if self._running >= self._max_running:
            self._error(token, name, 503, f"{self._running} commands already waiting")
            return
        self._running += 1
        self._tasks.spawn(self._run(token, name, self._commands[name], payload), f"command {name}")

    async def _run(self, token: Any, name: str, action: str, payload: dict[str, Any]) -> None:
        log.info("%s: command %s (%s)", self.charger_id, name, token)
        try:
            answer = await self._request(action, payload, self._timeout, include_wait=True)
        except CallErrorReceived as exc:
            self._error(token, name, exc.code, str(exc), ocppError=exc.error_code)
            return
        except OutgoingCallError as exc:
            self._error(token, name, exc.code, str(exc))
            return
        except asyncio.CancelledError:
            self._error(token, name, 504, "charger disconnected before answering")
            raise
        finally:
            self._running -= 1
        if self._mirror is not None:
            self._mirror(action, payload, answer)
        self._reporter.command_result(
            self.charger_id,
            {
                "clientToken": token,
                "name": name,
                "status": "ok",
                "response": answer,
            },
        )

    def _error(self, token: Any, name: Any, code: int, message: str, **extra: Any) -> None:
        if code >= 500:
            log.warning("%s: command %s failed: %s", self.charger_id, name, message)
        self._reporter.command_result(
            self.charger_id,
            {
                "clientToken": token,
                "name": name,
                "status": "error",
                "code": code,
                "message": message,
                **extra,
            },
        )
