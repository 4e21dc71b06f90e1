"""A simulated charger's life: its connection loop, boot, heartbeat and automatic sessions.

What lasts across connections lives on :class:`simulator.states.Charger`, the layer below;
what belongs to one websocket (the ocpp ``ChargePoint`` and the tasks that talk through
it) lives in one ``asyncio.TaskGroup`` per connection, so closing the socket ends all of
them. Tasks that outlive a connection (firmware download, diagnostics upload, fault
timers) sit in a held set cancelled when the charger stops. No threads: a fleet is
thousands of these objects on one event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from ocpp.charge_point import ChargePoint
from ocpp.v16 import call
from ocpp.v16.enums import ChargePointStatus, ReadingContext, RegistrationStatus
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed
from websockets.typing import Subprotocol

from simulator import faults, sessions
from simulator.connections import Backoff, ConnectError, Offline, Unauthorized, open_connection
from simulator.connectors import Connector
from simulator.links import ChargePointLink
from simulator.options import SimulatorOptions
from simulator.states import Charger, ChargerState, Close

__all__ = ["ChargerState", "Offline", "SimulatedCharger"]

ocpp_logger = logging.getLogger("simulator.ocpp")


class _LinkClosed(Exception):
    """The reader saw the socket close: ends the connection's task group."""


Observer = Callable[["SimulatedCharger", str], None]


class SimulatedCharger(Charger):
    """One charge point that connects, boots and operates until its fleet stops."""

    subprotocol = Subprotocol("ocpp1.6")

    def __init__(
        self, index: int, options: SimulatorOptions, observer: Observer | None = None
    ) -> None:
        super().__init__(index, options)
        self._observer = observer
        self._changed = asyncio.Event()
        self.config.on_change(self._config_changed)

    # -- lifecycle -----------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Connect, boot, operate and reconnect until ``stop`` is set."""
        if self.options.fault_rate_per_hour > 0:
            self.spawn(faults.random_faults(self), outlive_connection=True)
        try:
            await self._connect_loop(stop)
        finally:
            await self._stop_life_tasks()

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
                    ping_interval=self.ping_interval(),
                    subprotocol=self.subprotocol,
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
            if self.boots and reason is not Close.DROPPED:
                backoff.reset()
            if reason is Close.REBOOT:
                await _sleep(stop, opts.reboot_delay_s)
            elif reason is Close.DROPPED:
                delay = backoff.next()
                self.log.info("%s: connection lost; reconnecting in %.1f s", self.id, delay)
                await _sleep(stop, delay)

    def ping_interval(self) -> float | None:
        """Seconds between websocket pings (WebSocketPingInterval; 0 or unset: none)."""
        return self.config.integer("WebSocketPingInterval") or None

    def new_link(self, ws: ClientConnection) -> ChargePoint:
        """The OCPP endpoint of one connection: 1.6 here, 2.0.1 for a station."""
        return ChargePointLink(self, ws, self.options.response_timeout_s, ocpp_logger)

    async def _serve(self, ws: ClientConnection, stop: asyncio.Event) -> Close:
        link = self.new_link(ws)
        self._close_reason = Close.DROPPED
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

    async def _read(self, link: ChargePoint) -> None:
        with contextlib.suppress(ConnectionClosed):
            await link.start()
        raise _LinkClosed

    async def _close_on(self, stop: asyncio.Event) -> None:
        await stop.wait()
        await self.close(Close.STOP)

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

    async def send_meter_sample(self, connector: Connector, context: ReadingContext) -> None:
        await sessions.send_meter_values(self, connector, context)

    # -- faults (see simulator.faults) ---------------------------------------------------

    def inject_fault(
        self, kind: faults.FaultKind | str, connector_id: int = 1, duration_s: float | None = None
    ) -> None:
        """Start a fault now; it clears itself after ``duration_s`` when given."""
        faults.inject(self, faults.FaultKind(kind), connector_id, duration_s)

    def clear_fault(self, kind: faults.FaultKind | str, connector_id: int = 1) -> None:
        faults.clear(self, faults.FaultKind(kind), connector_id)


async def _sleep(stop: asyncio.Event, seconds: float) -> None:
    """Sleep, but wake at once when the fleet stops."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            await stop.wait()
