"""One charger's connection: the receive loop, the flood limit, and every task it owns.

The connection owns its handler (answers and mirrors), its reconciler (one task), its
commands (one task each) and the GetConfiguration after each boot; all of them end with
the socket. It decides when the charger is *online*: once it is accepted (its boot on this
connection, or an earlier accepted boot; see :mod:`bridge.handlers`), not at the upgrade.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import weakref
from dataclasses import dataclass, field
from typing import Any

from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed
from websockets.frames import CloseCode

from bridge.commands import CommandRunner, mirror_16
from bridge.credentials import ChargerCredentials
from bridge.errors import OutgoingCallError
from bridge.handlers import ChargePointHandler, Services
from bridge.limits import FloodGuard, FloodLimit
from bridge.reconcilers import Reconciler, connector_count
from bridge.tasks import TaskSet
from bridge.times import now
from chargetwin.database import DatabaseError

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ConnectionOptions:
    """Per-connection knobs (see :class:`bridge.app.BridgeOptions`)."""

    call_timeout: float = 30.0
    command_timeout: float = 30.0
    flood: FloodLimit = field(default_factory=FloodLimit)
    # How long after its boot's configuration read a charger has to report each connector's
    # status on its own before it is asked (TriggerMessage StatusNotification).
    status_grace: float = 5.0


class ChargerConnection:
    """Serves one charger's websocket until it closes, then cancels everything it started."""

    def __init__(
        self,
        charger_id: str,
        websocket: ServerConnection,
        services: Services,
        options: ConnectionOptions,
    ) -> None:
        self.charger_id = charger_id
        self.websocket = websocket
        self.since = now()
        self.closed_at = self.since
        # Set once the connection is torn down (the server waits for it on replacement).
        self.finished = asyncio.Event()
        self.tasks = TaskSet(charger_id)
        self.guard = FloodGuard(options.flood)
        self.services = services
        self.status_grace = options.status_grace
        # Connectors whose StatusNotification arrived since the last boot, and the event
        # set once every connector the charger has (NumberOfConnectors) is among them.
        self.statuses_seen: set[int] = set()
        self.statuses_expected: set[int] | None = None
        self.all_statuses_seen = asyncio.Event()
        # Set once the charger is accepted: presence says online, reconciliation may act.
        self.accepted = asyncio.Event()
        # The handler reports back through a weak proxy: a strong back-reference would put
        # every connection in a reference cycle, freed only by a full garbage collection
        # (~1 s with 10,000 chargers held) instead of as soon as the socket closes.
        self.handler = ChargePointHandler(
            charger_id,
            websocket,
            services,
            weakref.proxy(self),
            call_timeout=options.call_timeout,
            connected_at=self.since,
        )
        self.reconciler = Reconciler(
            charger_id,
            self.handler.request,
            services.reporter,
            services.firmware,
            self.handler.clock,
            self.accepted,
        )
        self.commands = CommandRunner(
            charger_id,
            self.handler.request,
            services.reporter,
            mirror_16(self.reconciler),
            self.tasks,
            timeout=options.command_timeout,
            accepted=self.accepted,
        )
        self.credentials = ChargerCredentials(
            charger_id, self.handler.request, services.credentials, self.tasks
        )

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
            code = self.websocket.close_code
            log.debug("%s: connection closed (code %s)", self.charger_id, code)

    async def close(self, code: int = CloseCode.NORMAL_CLOSURE, reason: str = "") -> None:
        await self.websocket.close(code, reason)

    @property
    def online(self) -> bool:
        """Announced online (accepted); an MQTT reconnect announces only these again."""
        return self.accepted.is_set()

    def _accept(self) -> None:
        if self.accepted.is_set():
            return
        self.handler.accepted = True
        self.accepted.set()
        self.services.reporter.presence(self.charger_id, True, now())
        log.debug("%s: online", self.charger_id)  # the "booted" line says it (INFO)

    async def _recall(self) -> None:
        """Was a boot of this charger accepted before? (It need not boot again.)"""
        # Unknown history must not lock a working charger out: it may talk unless the
        # store says it never booted (the handler waits for this answer, so it always comes).
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

    # --- events from the handler (ConnectionEvents) -------------------------------------------
    def booted(self) -> None:
        self._accept()
        self.statuses_seen.clear()
        self.statuses_expected = None
        self.all_statuses_seen.clear()
        self.reconciler.booted()
        if self.reconciler.firmware is not None and self.handler.charge_point is not None:
            self.reconciler.firmware.booted(self.handler.charge_point)
        self.tasks.spawn(self._after_boot(), "configuration")
        self.credentials.poke()  # a password rotation waiting for this charger

    def boot_wanted(self) -> None:
        self.tasks.spawn(self._ask_boot(), "boot request")

    async def _ask_boot(self) -> None:
        """OCPP 1.6 section 5.17: TriggerMessage BootNotification, once per connection."""
        try:
            answer = await self.handler.request(
                "TriggerMessage", {"requestedMessage": "BootNotification"}
            )
        except OutgoingCallError as exc:
            log.info("%s: TriggerMessage BootNotification failed: %s", self.charger_id, exc)
        else:
            status = answer.get("status")
            log.info("%s: TriggerMessage BootNotification %s", self.charger_id, status)

    def firmware_status(self, status: str) -> None:
        if self.reconciler.firmware is not None:
            self.reconciler.firmware.status(status)

    def availability_seen(self, connector: str, value: str) -> None:
        self.reconciler.observe("availability", connector, value)

    def status_seen(self, connector_id: int) -> None:
        self.statuses_seen.add(connector_id)
        if self.statuses_expected is not None and self.statuses_expected <= self.statuses_seen:
            self.all_statuses_seen.set()

    def transaction_started(self, connector_id: int, transaction_id: int, at: float) -> None:
        self.reconciler.transaction_started(connector_id, transaction_id, at)

    def transaction_stopped(self, transaction_id: int) -> None:
        self.reconciler.transaction_stopped(transaction_id)

    async def _after_boot(self) -> None:
        """Read the whole configuration into reported.config, reconcile, and make sure
        every connector's status is known again (the boot made them unknown)."""
        connectors: int | None = None
        # What the shadow holds in reported.config, read while the charger answers.
        configs = self.services.reported_configs
        held = None if configs is None else asyncio.ensure_future(configs.held(self.charger_id))
        try:
            answer = await self.handler.request("GetConfiguration", {})
        except OutgoingCallError as exc:
            log.warning("%s: GetConfiguration after boot failed: %s", self.charger_id, exc)
        else:
            known: dict[str, Any] | None = None
            try:
                known = None if held is None else await held
            except (DatabaseError, ValueError) as exc:  # the store, or a document in it
                log.info("%s: reported configuration unreadable (%s)", self.charger_id, exc)
            values = self.reconciler.record_configuration(answer, complete=True, held=known)
            log.debug("%s: %d configuration keys reported", self.charger_id, len(values))
            connectors = connector_count(values)
        finally:
            if held is not None and not held.done():
                held.cancel()  # the call failed, or the connection closed while it ran
        self.reconciler.poke()
        await self._statuses_after_boot(connectors)

    async def _statuses_after_boot(self, connectors: int | None) -> None:
        """Ask for the statuses the charger has not reported on its own.

        A charger reports each connector's status after it boots (OCPP 1.6 section 4.9);
        one that does not (a factory reset, a minimal firmware) is asked with TriggerMessage
        StatusNotification (section 5.17) once ``status_grace`` has passed without them:
        for the missing connectors, or without connectorId (every connector) when none
        reported or the charger's NumberOfConnectors is unknown. Asking a charger that
        reports anyway would double its boot's status traffic through bridge, twin and
        recorder for nothing.
        """
        missing: list[int | None] = []
        if connectors is not None:
            expected = self.statuses_expected = set(range(connectors + 1))
            seen = self.statuses_seen
            if not expected <= seen:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.all_statuses_seen.wait(), self.status_grace)
                if self.statuses_expected is not expected:
                    return  # the charger booted again meanwhile: that boot's turn now
            missing = [*sorted(expected - seen)]
            if not missing:
                return
            if len(missing) == len(expected):
                missing = []  # none reported: one request for every connector
        for connector_id in missing or [None]:
            # OCPP 1.6 section 5.17: without connectorId, for every connector.
            trigger: dict[str, Any] = {"requestedMessage": "StatusNotification"}
            if connector_id is not None:
                trigger["connectorId"] = connector_id
            try:
                triggered = await self.handler.request("TriggerMessage", trigger)
            except OutgoingCallError as exc:
                # The charger's own StatusNotifications after boot will do (section 4.9).
                log.info("%s: TriggerMessage StatusNotification failed: %s", self.charger_id, exc)
                return
            if triggered.get("status") != "Accepted":
                log.info(
                    "%s: TriggerMessage StatusNotification %s",
                    self.charger_id,
                    triggered.get("status"),
                )

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
        if not self.credentials.claims(payload):
            self.commands.submit(payload)
