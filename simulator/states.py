"""What a simulated charger is, and the plumbing every behaviour of it uses.

``Charger`` holds what lasts across connections (identity, configuration, connectors,
meters, firmware and diagnostics status, fault switches, counters) and the few operations
the behaviours need: send a CALL on the current connection, run a task owned by the
connection or by the charger, report a connector's status, and close the socket (reboot,
new password, going offline). It knows no behaviour: sessions, faults, firmware,
diagnostics and the OCPP link sit above it and take a ``Charger``; the connection loop
(:class:`simulator.chargers.SimulatedCharger`) sits on top and fills in the connection.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Coroutine
from enum import StrEnum
from typing import Any

from ocpp.charge_point import ChargePoint
from ocpp.exceptions import OCPPError
from ocpp.v16 import call
from ocpp.v16.enums import DiagnosticsStatus, FirmwareStatus, ReadingContext, Reason
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from simulator.configurations import ConfigurationStore, default_values
from simulator.connections import Offline
from simulator.connectors import Connector
from simulator.meters import Meter, utc_now
from simulator.options import SimulatorOptions
from simulator.profiles import ProfileStore

__all__ = ["Charger", "ChargerState", "Close", "FirmwareFailure"]

logger = logging.getLogger("simulator")


class ChargerState(StrEnum):
    OFFLINE = "offline"
    CONNECTING = "connecting"
    PENDING = "pending"  # connected, BootNotification not (yet) Accepted
    BOOTED = "booted"


class Close(StrEnum):
    """Why the socket was closed; the connection loop decides what comes next from it."""

    DROPPED = "dropped"
    REBOOT = "reboot"
    OFFLINE = "offline"
    STOP = "stop"
    NEW_PASSWORD = "new-password"


class FirmwareFailure(StrEnum):
    """Where a firmware update fails when the charger's ``fail_firmware`` switch is set."""

    DOWNLOAD = "download"  # the transfer breaks off: DownloadFailed
    CHECKSUM = "checksum"  # the image arrives corrupted: DownloadFailed after Downloading
    INSTALL = "install"  # the image is refused by the bootloader: InstallationFailed


class Charger:
    """One charge point's state. Faults, state and received calls are open to tests and tools."""

    def __init__(self, index: int, options: SimulatorOptions) -> None:
        self.index = index
        self.options = options
        self.id = options.charger_id(index)
        self.log = logger
        self.rng = options.rng(self.id)
        self.model = options.models[self.rng.randrange(len(options.models))]
        self.serial_number = f"{self.model.model}-{self.rng.randrange(16**8):08X}"
        self.firmware_version = self.model.firmware_version
        self.firmware_status = FirmwareStatus.idle
        self.diagnostics_status = DiagnosticsStatus.idle
        self.fail_firmware: FirmwareFailure | None = None
        meter_s = options.meter_interval_s or self.rng.randint(5, 10)
        self.config = ConfigurationStore(
            default_values(self.model.connectors, options.heartbeat_interval_s, meter_s)
        )
        self.connectors = [
            Connector(
                c,
                Meter(self.model.max_power_w, self.model.phases, self.rng.uniform(1e5, 5e6)),
            )
            for c in range(self.model.connectors + 1)
        ]
        self.state = ChargerState.OFFLINE
        self.received: deque[tuple[str, dict[str, Any]]] = deque(maxlen=options.keep_received)
        self.connects = 0
        self.boots = 0
        self.errors = 0
        self.sessions_started = 0
        self.sessions_completed = 0
        self.booted = asyncio.Event()
        # The current connection, set by the connection loop while a socket is open.
        self._ws: ClientConnection | None = None
        self._link: ChargePoint | None = None
        self._link_tasks: asyncio.TaskGroup | None = None
        self._life_tasks: set[asyncio.Task[None]] = set()
        self._close_reason = Close.DROPPED
        self._offline_until = 0.0
        self.pending_stop_reason = Reason.power_loss
        # HTTP Basic password: the configured one until the central system sets another
        # (ChangeConfiguration AuthorizationKey); a test may make the charger refuse that.
        self.password = options.password_for(self.id)
        self.refuse_authorization_key = False
        self.profiles = ProfileStore(int(self.config.get("MaxChargingProfilesInstalled") or 8))
        # How SetChargingProfile is answered; a test may change it (see ChargerModel).
        self.profile_answer = self.model.profile_answer

    # -- tasks ---------------------------------------------------------------------------

    def spawn(self, coro: Coroutine[Any, Any, None], *, outlive_connection: bool = False) -> None:
        """Run ``coro`` owned by this connection's task group, or by the charger's held set
        when it must outlive the socket. With no connection a connection-bound coroutine is
        dropped (closed, so nothing warns that it was never awaited)."""
        if outlive_connection:
            task = asyncio.get_running_loop().create_task(self._guard(coro))
            self._life_tasks.add(task)
            task.add_done_callback(self._life_tasks.discard)
            return
        if self._link_tasks is None:
            coro.close()
            return
        guarded = self._guard(coro)
        try:
            self._link_tasks.create_task(guarded)
        except RuntimeError:
            # The connection's task group is shutting down (the socket just closed):
            # drop the work like above, closing both coroutines so none is left unawaited.
            guarded.close()
            coro.close()

    async def _guard(self, coro: Coroutine[Any, Any, None]) -> None:
        """A task's failure is the charger's to log and count, never a crash of the fleet."""
        try:
            await coro
        except (ConnectionClosed, Offline):
            pass  # the socket went away; the connection loop takes it from here
        except (TimeoutError, OCPPError) as exc:
            self.errors += 1
            self.log.warning("%s: %s: %s", self.id, type(exc).__name__, exc)
        except Exception:
            self.errors += 1
            self.log.exception("%s: unexpected error in a charger task", self.id)

    async def _stop_life_tasks(self) -> None:
        """Cancel the tasks that outlive connections (the charger stops) and wait for them."""
        for task in list(self._life_tasks):
            task.cancel()
        if self._life_tasks:
            await asyncio.gather(*self._life_tasks, return_exceptions=True)

    # -- messages ------------------------------------------------------------------------

    async def call(self, payload: Any) -> Any:
        """Send a CALL and return its result; a CALLERROR raises its ``OCPPError``."""
        link = self._link
        if link is None:
            raise Offline(self.id)
        return await link.call(payload, suppress=False)

    async def send_status(self, connector: Connector) -> None:
        """StatusNotification.req (OCPP 1.6 section 4.9) with the connector's current state."""
        await self.call(
            call.StatusNotification(
                connector_id=connector.id,
                error_code=connector.error_code,
                status=connector.status,
                timestamp=utc_now(),
            )
        )

    async def send_meter_sample(self, connector: Connector, context: ReadingContext) -> None:
        """A meter reading of ``connector`` now (a fault's hot reading), in the message of
        the charger's OCPP version: the connection loop above knows which."""
        raise NotImplementedError

    def connector(self, connector_id: int) -> Connector:
        return self.connectors[connector_id]

    def offer(self, connector: Connector) -> tuple[float, int] | None:
        """What the charging profiles let ``connector`` draw now (amperes per phase,
        phases); None: only the charger's rating. The charger's cap (ChargePointMaxProfile)
        is shared by the connectors that charge."""
        at = time.time()
        tx_start = connector.started_at if connector.transaction_id is not None else None
        own = self.profiles.limit(connector.id, at, tx_start)
        if own is None:
            return None
        cap = self.profiles.limit(0, at)
        if cap is not None:
            sharing = sum(1 for c in self.connectors[1:] if c.transaction_id is not None)
            if sharing > 1:
                own_amps = min(own.amps, cap.amps / sharing)
                return own_amps, own.phases
        return own.amps, own.phases

    def profiles_changed(self) -> None:
        """Wake every connector's session: its car follows the new limit at once."""
        for connector in self.connectors:
            connector.limit_changed.set()

    # -- closing the socket --------------------------------------------------------------

    async def close(self, reason: Close = Close.DROPPED) -> None:
        """Close the socket; the reader then ends the connection's tasks."""
        self._close_reason = reason
        if self._ws is not None:
            await self._ws.close()

    def reboot(self, stop_reason: Reason) -> None:
        """Reboot (Reset, new firmware): sessions end with ``stop_reason`` reported after
        the next boot, as a charger does that lost its transactions to the restart."""
        self.pending_stop_reason = stop_reason
        if not self.options.profiles_survive_reboot:
            self.profiles.clear()
        self.log.info("%s: rebooting (%s)", self.id, stop_reason)
        self.spawn(self.close(Close.REBOOT), outlive_connection=True)

    def change_password(self, password: str) -> None:
        """Take a new AuthorizationKey into use: reconnect with it at once, so the central
        system sees the new password work and can drop the old one."""
        self.password = password
        self.log.info("%s: new AuthorizationKey; reconnecting with it", self.id)
        self.spawn(self.close(Close.NEW_PASSWORD), outlive_connection=True)

    def go_offline(self, seconds: float) -> None:
        """Drop the connection and stay away ``seconds`` (the 'offline' fault)."""
        self._offline_until = asyncio.get_running_loop().time() + seconds
        self.pending_stop_reason = Reason.power_loss
        self.log.info("%s: going offline for %.0f s", self.id, seconds)
        self.spawn(self.close(Close.OFFLINE), outlive_connection=True)
