"""One OCPP 2.0.1 station's connection: the receive loop, the boot sequence, owned tasks.

The same shape as :class:`bridge.connections.ChargerConnection` (flood limit, presence
once accepted, every task ends with the socket), with the 2.0.1 boot: a Pending boot
makes the connection read the device model (GetBaseReport FullInventory, its NotifyReport
parts assembled by the handler) into ``reported.config`` / ``reported.deviceModel``, then
ask the station to boot again (TriggerMessage BootNotification), which is Accepted.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import secrets
import weakref
from typing import Any

from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed
from websockets.frames import CloseCode

from bridge.commands import CommandRunner
from bridge.connections import ConnectionOptions
from bridge.errors import OutgoingCallError
from bridge.handlers import Services
from bridge.limits import FloodGuard
from bridge.tasks import TaskSet
from bridge.times import now
from bridge.v201.commands import COMMANDS, adapt, mirror_201
from bridge.v201.credentials import StationCredentials
from bridge.v201.devicemodel import ReportTooLargeError
from bridge.v201.endpoints import VERSION
from bridge.v201.firmwares import StationFirmware
from bridge.v201.handlers import StationHandler
from bridge.v201.reconcilers import StationReconciler
from bridge.v201.transactions import TransactionEvents
from chargetwin.database import DatabaseError

log = logging.getLogger(__name__)

# How long the whole device model may take to arrive after GetBaseReport is accepted.
REPORT_TIMEOUT = 60.0


async def stored_device_model(services: Services, charger_id: str) -> dict[str, Any]:
    """``reported.deviceModel`` as the shadow store holds it (empty when unknown)."""
    if services.firmware is None:
        return {}
    document = await services.firmware.shadows.get_document(charger_id) or {}
    model = ((document.get("state") or {}).get("reported") or {}).get("deviceModel")
    return model if isinstance(model, dict) else {}


class StationConnection:
    """Serves one 2.0.1 station's websocket until it closes, then cancels its tasks."""

    ocpp_version = VERSION

    def __init__(
        self,
        charger_id: str,
        websocket: ServerConnection,
        services: Services,
        options: ConnectionOptions,
        transactions: TransactionEvents,
    ) -> None:
        self.charger_id = charger_id
        self.websocket = websocket
        self.since = now()
        self.closed_at = self.since
        self.finished = asyncio.Event()
        self.tasks = TaskSet(charger_id)
        self.guard = FloodGuard(options.flood)
        self.services = services
        self.accepted = asyncio.Event()
        # A weak back-reference, as for 1.6 (no reference cycle through the handler).
        self.handler = StationHandler(
            charger_id,
            websocket,
            services,
            weakref.proxy(self),
            transactions,
            call_timeout=options.call_timeout,
            connected_at=self.since,
        )
        self.reconciler = StationReconciler(
            charger_id,
            self.handler.request,
            services.reporter,
            services.firmware,
            self.handler.clock,
            self.accepted,
            # A function of the services, not a bound method: no reference cycle.
            stored_model=functools.partial(stored_device_model, services, charger_id),
        )
        self.credentials = StationCredentials(
            charger_id, self.handler.request, services.credentials, self.tasks
        )
        self.commands = CommandRunner(
            charger_id,
            self.handler.request,
            services.reporter,
            mirror_201(self.reconciler),
            self.tasks,
            commands=COMMANDS,
            adapt=adapt,
            timeout=options.command_timeout,
            accepted=self.accepted,
        )
        self.device_model_reads = 0

    # --- lifecycle -----------------------------------------------------------------------
    async def serve(self) -> None:
        """Read frames until the socket closes; always cancels the owned tasks."""
        self.tasks.spawn(self.reconciler.run(), "reconciler")
        self.tasks.spawn(self._recall(), "history")
        try:
            async for frame in self.websocket:
                admitted = self.guard.admit()
                if not admitted and self.guard.exhausted:
                    log.warning(
                        "%s: over the flood limit for %.1f s; closing",
                        self.charger_id,
                        self.guard.limit.grace,
                    )
                    await self.websocket.close(CloseCode.POLICY_VIOLATION, "rate limit")
                    break
                await self.handler.route_message(frame, admitted)
        except ConnectionClosed:
            pass
        finally:
            self.closed_at = now()
            self.handler.fail_pending()
            await self.tasks.cancel_all()

    async def close(self, code: int = CloseCode.NORMAL_CLOSURE, reason: str = "") -> None:
        await self.websocket.close(code, reason)

    @property
    def online(self) -> bool:
        return self.accepted.is_set()

    def _accept(self) -> None:
        if self.accepted.is_set():
            return
        self.handler.accepted = True
        self.accepted.set()
        self.services.reporter.presence(self.charger_id, True, now(), VERSION)
        # DEBUG, as for 1.6: a reconnect storm would write one line per station.
        log.debug("%s: online (OCPP %s)", self.charger_id, VERSION)

    async def _recall(self) -> None:
        """Was a boot of this station accepted before? (It need not boot again.)"""
        known = True
        try:
            history = self.services.boot_history
            if self.charger_id not in self.services.accepted and history is not None:
                known = await history.booted_before(self.charger_id)
        except DatabaseError as exc:
            log.warning("%s: boot history unreadable (%s); accepted", self.charger_id, exc)
        finally:
            if not self.handler.history.done():
                self.handler.history.set_result(known)
        if known:
            self._accept()

    # --- events from the handler (StationEvents) -----------------------------------------------
    def booted(self) -> None:
        self._accept()
        self.reconciler.booted()
        firmware = self.reconciler.firmware
        if isinstance(firmware, StationFirmware) and self.handler.charge_point is not None:
            firmware.booted(self.handler.charge_point)
        self.reconciler.poke()
        self.credentials.poke()  # a password rotation waiting for this station

    def firmware_status(self, status: str, request_id: int | None) -> None:
        firmware = self.reconciler.firmware
        if isinstance(firmware, StationFirmware):
            self.tasks.spawn(firmware.progress(status, request_id), "firmware status")

    def transaction_started(self, evse_id: int, transaction_id: str, at: float) -> None:
        self.reconciler.transaction_started(evse_id, transaction_id, at)

    def transaction_stopped(self, transaction_id: str) -> None:
        self.reconciler.transaction_stopped(transaction_id)

    def boot_pending(self) -> None:
        self.tasks.spawn(self._read_device_model(), "device model")

    def boot_wanted(self) -> None:
        self.tasks.spawn(self._trigger_boot(), "boot request")

    def availability_seen(self, port: str, value: str) -> None:
        self.reconciler.observe("availability", port, value)

    async def _read_device_model(self) -> None:
        """GetBaseReport FullInventory into the shadow, then ask for the boot again."""
        self.device_model_reads += 1
        request_id = secrets.randbelow(2**31 - 1) + 1
        whole = self.handler.reports.expect(request_id)
        try:
            answer = await self.handler.request(
                "GetBaseReport", {"requestId": request_id, "reportBase": "FullInventory"}
            )
            status = answer.get("status")
            if status == "Accepted":
                data = await asyncio.wait_for(whole, REPORT_TIMEOUT)
                config, model = self.handler.record_report(data, complete=True)
                self.reconciler.record_device_model(config, model)
                log.info("%s: device model read: %d values", self.charger_id, len(config))
            else:
                log.warning("%s: GetBaseReport FullInventory %s", self.charger_id, status)
        except OutgoingCallError as exc:
            log.warning("%s: GetBaseReport failed: %s", self.charger_id, exc)
        except TimeoutError:
            log.warning(
                "%s: device model not complete after %.0f s", self.charger_id, REPORT_TIMEOUT
            )
        except ReportTooLargeError as exc:
            log.warning("%s: device model not kept: %s", self.charger_id, exc)
        finally:
            self.handler.reports.forget(request_id)
            # Accepted at the next boot whatever the read gave: a station whose device
            # model cannot be read must still be able to charge.
            self.handler.model_state = "read"
        await self._trigger_boot()

    async def _trigger_boot(self) -> None:
        """TriggerMessage BootNotification (OCPP 2.0.1 F06); without it the station boots
        again by itself after the Pending interval."""
        try:
            answer = await self.handler.request(
                "TriggerMessage", {"requestedMessage": "BootNotification"}
            )
        except OutgoingCallError as exc:
            log.info("%s: TriggerMessage BootNotification failed: %s", self.charger_id, exc)
        else:
            log.debug("%s: TriggerMessage BootNotification %s", self.charger_id, answer)

    # --- MQTT inputs ---------------------------------------------------------------------
    def on_delta(self, payload: bytes) -> None:
        try:
            message: Any = json.loads(payload)
        except ValueError:
            log.warning("%s: delta is not JSON; ignored", self.charger_id)
            return
        if isinstance(message, dict):
            self.reconciler.on_delta(message)

    def on_command(self, payload: bytes) -> None:
        if self.credentials.claims(payload):
            return  # a password rotation (SetVariables SecurityCtrlr/BasicAuthPassword)
        self.commands.submit(payload)
