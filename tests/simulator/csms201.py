"""An independent OCPP 2.0.1 CSMS for the simulator's station tests (imported, not a fixture).

Built directly on ``ocpp.v201.ChargePoint`` and ``websockets.serve``, not on our bridge, so
that the simulated station and the platform cannot agree on a shared mistake: the library
checks every message the station sends against the official 2.0.1 JSON schemas.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pytest
from ocpp.routing import on
from ocpp.v201 import ChargePoint
from ocpp.v201 import call_result as result
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed


def now() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


class Csms201Point(ChargePoint):  # type: ignore[misc]
    """The CSMS end of one station's socket: records everything it receives."""

    __test__ = False

    def __init__(self, station_id: str, ws: ServerConnection, csms: Csms201) -> None:
        super().__init__(station_id, ws, response_timeout=5)
        self.csms = csms

    async def _handle_call(self, msg: Any) -> Any:
        self.csms.record(self.id, msg.action, msg.payload)
        return await super()._handle_call(msg)

    @on("BootNotification")
    def on_boot(self, **_: Any) -> Any:
        status = self.csms.boot_statuses.pop(0) if self.csms.boot_statuses else "Accepted"
        return result.BootNotification(current_time=now(), interval=10, status=status)

    @on("Heartbeat")
    def on_heartbeat(self, **_: Any) -> Any:
        return result.Heartbeat(current_time=now())

    @on("Authorize")
    def on_authorize(self, **_: Any) -> Any:
        return result.Authorize(id_token_info={"status": "Accepted"})

    @on("TransactionEvent")
    def on_transaction_event(self, **_: Any) -> Any:
        return result.TransactionEvent()

    @on("StatusNotification")
    def on_status(self, **_: Any) -> Any:
        return result.StatusNotification()

    @on("NotifyReport")
    def on_notify_report(self, **_: Any) -> Any:
        return result.NotifyReport()

    @on("NotifyEvent")
    def on_notify_event(self, **_: Any) -> Any:
        return result.NotifyEvent()

    @on("MeterValues")
    def on_meter_values(self, **_: Any) -> Any:
        return result.MeterValues()

    @on("FirmwareStatusNotification")
    def on_firmware_status(self, **_: Any) -> Any:
        return result.FirmwareStatusNotification()

    @on("LogStatusNotification")
    def on_log_status(self, **_: Any) -> Any:
        return result.LogStatusNotification()


@dataclass
class Csms201:
    """A minimal 2.0.1 CSMS without authentication, recording what stations send."""

    boot_statuses: list[str] = field(default_factory=list)
    received: list[tuple[str, str, dict[str, Any]]] = field(default_factory=list)
    points: dict[str, Csms201Point] = field(default_factory=dict)
    port: int = 0
    _server: Server | None = None
    _changed: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ocpp"

    async def start(self) -> None:
        self._server = await serve(
            self._serve,
            "127.0.0.1",
            0,
            subprotocols=["ocpp2.0.1"],  # type: ignore[list-item]
        )
        self.port = next(iter(self._server.sockets)).getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _serve(self, ws: ServerConnection) -> None:
        station_id = ws.request.path.rsplit("/", 1)[-1] if ws.request else "?"
        point = Csms201Point(station_id, ws, self)
        self.points[station_id] = point
        self.changed()
        with contextlib.suppress(ConnectionClosed):
            await point.start()
        if self.points.get(station_id) is point:
            del self.points[station_id]
        self.changed()

    def record(self, station_id: str, action: str, payload: dict[str, Any]) -> None:
        self.received.append((station_id, action, payload))
        self.changed()

    def changed(self) -> None:
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    def messages(self, station_id: str, action: str) -> list[dict[str, Any]]:
        return [p for c, a, p in self.received if c == station_id and a == action]

    async def wait(self, predicate: Any, timeout: float = 5.0) -> None:
        try:
            async with asyncio.timeout(timeout):
                while not predicate():
                    changed = self._changed
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(0.05):
                            await changed.wait()
        except TimeoutError:
            pytest.fail(f"condition not met within {timeout} s; received {self.received[-8:]}")

    async def call(self, station_id: str, payload: Any) -> Any:
        return await self.points[station_id].call(payload, suppress=False)
