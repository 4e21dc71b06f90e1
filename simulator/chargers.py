"""A simulated charger: its lasting state, its connection loop, boot and heartbeat.

What lasts across connections (configuration, connectors, meters, firmware version,
faults, counters) lives on ``SimulatedCharger``; what belongs to one websocket (the ocpp
``ChargePoint`` and the tasks that talk through it) lives in one ``asyncio.TaskGroup`` per
connection, so closing the socket ends all of them. Tasks that outlive a connection
(firmware download, diagnostics upload, fault timers) sit in a held set cancelled when the
charger stops. No threads: a fleet is thousands of these objects on one event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Callable, Coroutine
from enum import StrEnum
from typing import Any

from ocpp.exceptions import OCPPError
from ocpp.v16 import call
from ocpp.v16.enums import (
    ChargePointStatus,
    DiagnosticsStatus,
    FirmwareStatus,
    Reason,
    RegistrationStatus,
)
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from simulator import faults, sessions
from simulator.configurations import ConfigurationStore, default_values
from simulator.connections import Backoff, ConnectError, Offline, Unauthorized, open_connection
from simulator.links import ChargePointLink
from simulator.meters import Meter, utc_now
from simulator.options import SimulatorOptions
from simulator.sessions import Connector

__all__ = ["ChargerState", "Offline", "SimulatedCharger"]

logger = logging.getLogger("simulator")
ocpp_logger = logging.getLogger("simulator.ocpp")


class ChargerState(StrEnum):
    OFFLINE = "offline"
    CONNECTING = "connecting"
    PENDING = "pending"  # connected, BootNotification not (yet) Accepted
    BOOTED = "booted"


class _LinkClosed(Exception):
    """The reader saw the socket close: ends the connection's task group."""


class _Close(StrEnum):
    DROPPED = "dropped"
    REBOOT = "reboot"
    OFFLINE = "offline"
    STOP = "stop"
    NEW_PASSWORD = "new-password"


Observer = Callable[["SimulatedCharger", str], None]


class SimulatedCharger:
    """One charge point. Faults, state and received calls are open to tests and tools."""

    def __init__(
        self, index: int, options: SimulatorOptions, observer: Observer | None = None
    ) -> None:
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
        self.fail_firmware: faults.FirmwareFailure | None = None
        meter_s = options.meter_interval_s or self.rng.randint(5, 10)
        self.config = ConfigurationStore(
            default_values(self.model.connectors, options.heartbeat_interval_s, meter_s)
        )
        self.config.on_change(self._config_changed)
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
        self._observer = observer
        self._changed = asyncio.Event()
        self._ws: ClientConnection | None = None
        self._link: ChargePointLink | None = None
        self._link_tasks: asyncio.TaskGroup | None = None
        self._life_tasks: set[asyncio.Task[None]] = set()
        self._close_reason = _Close.DROPPED
        self._offline_until = 0.0
        self.pending_stop_reason = Reason.power_loss
        # HTTP Basic password: the configured one until the central system sets another
        # (ChangeConfiguration AuthorizationKey); a test may make the charger refuse that.
        self.password = options.password_for(self.id)
        self.refuse_authorization_key = False

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

    # -- lifecycle -----------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Connect, boot, operate and reconnect until ``stop`` is set."""
        if self.options.fault_rate_per_hour > 0:
            self.spawn(faults.random_faults(self), outlive_connection=True)
        try:
            await self._connect_loop(stop)
        finally:
            for task in list(self._life_tasks):
                task.cancel()
            if self._life_tasks:
                await asyncio.gather(*self._life_tasks, return_exceptions=True)

    async def _connect_loop(self, stop: asyncio.Event) -> None:
        opts = self.options
        backoff = Backoff(opts.reconnect_min_s, opts.reconnect_max_s, self.rng)
        loop = asyncio.get_running_loop()
        while not stop.is_set():
            away = self._offline_until - loop.time()
            if away > 0:
                await _sleep(stop, away)
                continue
            self.state = ChargerState.CONNECTING
            try:
                ws = await open_connection(
                    opts.url,
                    self.id,
                    self.password,
                    open_timeout=opts.open_timeout_s,
                    ping_interval=self.config.integer("WebSocketPingInterval") or None,
                )
            except Unauthorized as exc:
                self.errors += 1
                self.state = ChargerState.OFFLINE
                self.log.warning(
                    "%s: refused with 401 Unauthorized (%s): check the charger's password "
                    "and its registration; retrying in %.0f s",
                    self.id,
                    exc,
                    opts.unauthorized_retry_s,
                )
                await _sleep(stop, opts.unauthorized_retry_s)
                continue
            except ConnectError as exc:
                self.errors += 1
                self.state = ChargerState.OFFLINE
                delay = backoff.next()
                self.log.info("%s: connect failed (%s); retry in %.1f s", self.id, exc, delay)
                await _sleep(stop, delay)
                continue
            self.connects += 1
            reason = await self._serve(ws, stop)
            if self.boots and reason is not _Close.DROPPED:
                backoff.reset()
            if reason is _Close.REBOOT:
                await _sleep(stop, opts.reboot_delay_s)
            elif reason is _Close.DROPPED:
                delay = backoff.next()
                self.log.info("%s: connection lost; reconnecting in %.1f s", self.id, delay)
                await _sleep(stop, delay)

    async def _serve(self, ws: ClientConnection, stop: asyncio.Event) -> _Close:
        link = ChargePointLink(self, ws, self.options.response_timeout_s, ocpp_logger)
        self._close_reason = _Close.DROPPED
        self._ws = ws
        self.state = ChargerState.PENDING
        self._notify("connected")
        try:
            async with asyncio.TaskGroup() as tg:
                self._link, self._link_tasks = link, tg
                tg.create_task(self._read(link))
                tg.create_task(self._close_on(stop))
                tg.create_task(self._guard(self._operate()))
        except* _LinkClosed:
            pass
        finally:
            was_booted = self.state is ChargerState.BOOTED
            self._link = self._link_tasks = self._ws = None
            self.state = ChargerState.OFFLINE
            self.booted.clear()
            await ws.close()
            self._notify("disconnected" if not was_booted else "disconnected-booted")
        return self._close_reason

    async def _read(self, link: ChargePointLink) -> None:
        with contextlib.suppress(ConnectionClosed):
            await link.start()
        raise _LinkClosed

    async def _close_on(self, stop: asyncio.Event) -> None:
        await stop.wait()
        await self.close(_Close.STOP)

    async def close(self, reason: _Close = _Close.DROPPED) -> None:
        """Close the socket; the reader then ends the connection's tasks."""
        self._close_reason = reason
        if self._ws is not None:
            await self._ws.close()

    def reboot(self, stop_reason: Reason) -> None:
        """Reboot (Reset, new firmware): sessions end with ``stop_reason`` reported after
        the next boot, as a charger does that lost its transactions to the restart."""
        self.pending_stop_reason = stop_reason
        self.log.info("%s: rebooting (%s)", self.id, stop_reason)
        self.spawn(self.close(_Close.REBOOT), outlive_connection=True)

    def change_password(self, password: str) -> None:
        """Take a new AuthorizationKey into use: reconnect with it at once, so the central
        system sees the new password work and can drop the old one."""
        self.password = password
        self.log.info("%s: new AuthorizationKey; reconnecting with it", self.id)
        self.spawn(self.close(_Close.NEW_PASSWORD), outlive_connection=True)

    def go_offline(self, seconds: float) -> None:
        """Drop the connection and stay away ``seconds`` (the 'offline' fault)."""
        self._offline_until = asyncio.get_running_loop().time() + seconds
        self.pending_stop_reason = Reason.power_loss
        self.log.info("%s: going offline for %.0f s", self.id, seconds)
        self.spawn(self.close(_Close.OFFLINE), outlive_connection=True)

    def _notify(self, what: str) -> None:
        if self._observer is not None:
            self._observer(self, what)

    # -- boot and heartbeat --------------------------------------------------------------

    async def _operate(self) -> None:
        """Boot (section 4.2), report what a reboot interrupted, then start the loops."""
        while True:
            answer = await self.call(
                call.BootNotification(
                    charge_point_vendor=self.model.vendor,
                    charge_point_model=self.model.model,
                    charge_point_serial_number=self.serial_number,
                    charge_box_serial_number=self.serial_number,
                    firmware_version=self.firmware_version,
                    meter_type="SIM-MID-3P",
                )
            )
            interval = int(answer.interval)
            if answer.status == RegistrationStatus.accepted:
                if interval > 0:
                    self.config.set("HeartbeatInterval", str(interval))
                break
            # Pending: the central system may configure us first; Rejected: no message
            # until the interval passed (section 4.2). Either way, ask again later.
            wait = interval if interval > 0 else self.options.boot_retry_s
            self.log.info("%s: boot %s; retrying in %s s", self.id, answer.status, wait)
            await asyncio.sleep(wait)
        self.state = ChargerState.BOOTED
        self.boots += 1
        for connector in self.connectors[1:]:
            if connector.transaction_id is not None:
                await sessions.stop_transaction(self, connector, self.pending_stop_reason)
            if connector.stop is None and not connector.stuck:
                connector.phase = ChargePointStatus.available
        for connector in self.connectors:
            await self.send_status(connector)
        # "Booted" for observers means the boot sequence is over, statuses included.
        self.booted.set()
        self._notify("booted")
        self.spawn(self._heartbeats())
        if self.options.sessions.auto_sessions:
            for connector in self.connectors[1:]:
                self.spawn(self._auto_sessions(connector))

    async def _heartbeats(self) -> None:
        """Heartbeat.req (section 4.6) every HeartbeatInterval; a change applies at once."""
        while True:
            interval = self.config.integer("HeartbeatInterval")
            if await self.wait_changed(interval if interval > 0 else None):
                continue
            await self.call(call.Heartbeat())

    async def _auto_sessions(self, connector: Connector) -> None:
        timing = self.options.sessions
        while True:
            await asyncio.sleep(self.rng.uniform(*timing.idle_s))
            if connector.can_start():
                tag = f"SIM{self.rng.randrange(16**6):06X}"
                await sessions.run_session(self, connector, tag, authorize=True)

    def _config_changed(self, key: str) -> None:
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    async def wait_changed(self, seconds: float | None) -> bool:
        """Sleep ``seconds``; True as soon as the configuration changes."""
        changed = self._changed
        try:
            async with asyncio.timeout(seconds):
                await changed.wait()
        except TimeoutError:
            return False
        return True

    # -- faults (see simulator.faults) ---------------------------------------------------

    def inject_fault(
        self, kind: faults.FaultKind | str, connector_id: int = 1, duration_s: float | None = None
    ) -> None:
        """Start a fault now; it clears itself after ``duration_s`` when given."""
        faults.inject(self, faults.FaultKind(kind), connector_id, duration_s)

    def clear_fault(self, kind: faults.FaultKind | str, connector_id: int = 1) -> None:
        faults.clear(self, faults.FaultKind(kind), connector_id)

    def connector(self, connector_id: int) -> Connector:
        return self.connectors[connector_id]


async def _sleep(stop: asyncio.Event, seconds: float) -> None:
    """Sleep, but wake at once when the fleet stops."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            await stop.wait()
