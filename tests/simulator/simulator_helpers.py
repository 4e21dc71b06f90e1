"""Helpers of the simulator tests: an independent central system and a tiny HTTP server.

The central system is built directly on ``ocpp.v16.ChargePoint`` and ``websockets.serve``
(not on our bridge), so the simulator and the platform cannot agree on a shared mistake.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from http import HTTPStatus
from typing import Any

import pytest
from ocpp.routing import on
from ocpp.v16 import ChargePoint
from ocpp.v16 import call_result as result
from ocpp.v16.enums import Action, AuthorizationStatus, RegistrationStatus
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from simulator import Fleet, SessionTiming, SimulatorOptions

PASSWORD = "s3cret-pass-00001"


def now() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


class TestCentralSystemPoint(ChargePoint):  # type: ignore[misc]
    """The central-system end of one charger's socket: records everything it receives."""

    __test__ = False

    def __init__(self, charger_id: str, ws: ServerConnection, cs: CentralSystem) -> None:
        super().__init__(charger_id, ws, response_timeout=5)
        self.cs = cs

    async def _handle_call(self, msg: Any) -> Any:
        self.cs.record(self.id, msg.action, msg.payload)
        return await super()._handle_call(msg)

    @on(Action.boot_notification)
    def on_boot(self, **_: Any) -> Any:
        status, interval = self.cs.boot_answer(self.id)
        return result.BootNotification(current_time=now(), interval=interval, status=status)

    @on(Action.heartbeat)
    def on_heartbeat(self, **_: Any) -> Any:
        return result.Heartbeat(current_time=now())

    @on(Action.status_notification)
    def on_status(self, **_: Any) -> Any:
        return result.StatusNotification()

    @on(Action.authorize)
    def on_authorize(self, id_tag: str, **_: Any) -> Any:
        return result.Authorize(id_tag_info={"status": self.cs.authorization(id_tag)})

    @on(Action.start_transaction)
    def on_start(self, id_tag: str, **_: Any) -> Any:
        return result.StartTransaction(
            transaction_id=next(self.cs.transaction_ids),
            id_tag_info={"status": self.cs.authorization(id_tag)},
        )

    @on(Action.stop_transaction)
    def on_stop(self, **_: Any) -> Any:
        return result.StopTransaction()

    @on(Action.meter_values)
    def on_meter_values(self, **_: Any) -> Any:
        return result.MeterValues()

    @on(Action.firmware_status_notification)
    def on_firmware_status(self, **_: Any) -> Any:
        return result.FirmwareStatusNotification()

    @on(Action.diagnostics_status_notification)
    def on_diagnostics_status(self, **_: Any) -> Any:
        return result.DiagnosticsStatusNotification()


@dataclass
class CentralSystem:
    """A minimal OCPP 1.6J central system with Basic auth, recording what chargers send."""

    heartbeat_interval: int = 60
    boot_statuses: dict[str, list[str]] = field(default_factory=dict)
    blocked_tags: set[str] = field(default_factory=set)
    password: str = PASSWORD
    received: list[tuple[str, str, dict[str, Any]]] = field(default_factory=list)
    points: dict[str, TestCentralSystemPoint] = field(default_factory=dict)
    connections: dict[str, int] = field(default_factory=dict)
    refused: int = 0
    port: int = 0
    transaction_ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1000))
    _server: Server | None = None
    _changed: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ocpp"

    async def start(self, port: int = 0) -> None:
        self._server = await serve(
            self._serve,
            "127.0.0.1",
            port,
            subprotocols=["ocpp1.6"],  # type: ignore[list-item]
            process_request=self._check_auth,
        )
        self.port = next(iter(self._server.sockets)).getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    def _check_auth(self, conn: ServerConnection, request: Request) -> Response | None:
        charger_id = request.path.rsplit("/", 1)[-1]
        expected = base64.b64encode(f"{charger_id}:{self.password}".encode()).decode()
        if request.headers.get("Authorization") != f"Basic {expected}":
            self.refused += 1
            self.changed()
            return conn.respond(HTTPStatus.UNAUTHORIZED, "bad credentials\n")
        return None

    async def _serve(self, ws: ServerConnection) -> None:
        charger_id = ws.request.path.rsplit("/", 1)[-1] if ws.request else "?"
        point = TestCentralSystemPoint(charger_id, ws, self)
        self.points[charger_id] = point
        self.connections[charger_id] = self.connections.get(charger_id, 0) + 1
        self.changed()
        try:
            await point.start()
        except ConnectionClosed:
            pass
        finally:
            if self.points.get(charger_id) is point:
                del self.points[charger_id]
            self.changed()

    def boot_answer(self, charger_id: str) -> tuple[str, int]:
        planned = self.boot_statuses.get(charger_id)
        if planned:
            return planned.pop(0), 1
        return RegistrationStatus.accepted, self.heartbeat_interval

    def authorization(self, id_tag: str) -> str:
        if id_tag in self.blocked_tags:
            return AuthorizationStatus.blocked
        return AuthorizationStatus.accepted

    def record(self, charger_id: str, action: str, payload: dict[str, Any]) -> None:
        self.received.append((charger_id, action, payload))
        self.changed()

    def changed(self) -> None:
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    def messages(self, charger_id: str, action: str) -> list[dict[str, Any]]:
        return [p for c, a, p in self.received if c == charger_id and a == action]

    def actions(self, charger_id: str) -> list[str]:
        return [a for c, a, _ in self.received if c == charger_id]

    async def wait(self, predicate: Callable[[], bool], timeout: float = 5.0) -> None:
        """Wait until ``predicate()`` holds; fail the test with a clear message if not."""
        try:
            async with asyncio.timeout(timeout):
                while not predicate():
                    changed = self._changed
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(0.05):
                            await changed.wait()
        except TimeoutError:
            pytest.fail(f"condition not met within {timeout} s; received {self.received[-8:]}")

    async def call(self, charger_id: str, payload: Any) -> Any:
        return await self.points[charger_id].call(payload, suppress=False)


FAST_SESSIONS = SessionTiming(
    auto_sessions=False, plug_delay_s=0.05, unplug_delay_s=0.05, duration_s=(2.5, 2.5)
)


def fast_options(url: str, **changes: Any) -> SimulatorOptions:
    """Options that make every timing of the simulator short enough for tests."""
    base = SimulatorOptions(
        url=url,
        chargers=1,
        password=PASSWORD,
        seed=7,
        meter_interval_s=1,
        sessions=FAST_SESSIONS,
        reconnect_min_s=0.05,
        reconnect_max_s=0.3,
        unauthorized_retry_s=0.3,
        reboot_delay_s=0.05,
        firmware_install_s=0.05,
        response_timeout_s=5,
    )
    return replace(base, **changes)


@contextlib.asynccontextmanager
async def running(options: SimulatorOptions) -> AsyncIterator[Fleet]:
    """Run a fleet for the block's duration; stop it and wait for every task at the end."""
    fleet = Fleet(options)
    stop = asyncio.Event()
    task = asyncio.create_task(fleet.run(stop))
    try:
        yield fleet
    finally:
        stop.set()
        async with asyncio.timeout(10):
            await task


@dataclass
class HttpServer:
    """A tiny HTTP/1.1 server on asyncio streams: serves files on GET, keeps PUT/POST bodies."""

    files: dict[str, bytes] = field(default_factory=dict)
    uploads: list[tuple[str, str, bytes]] = field(default_factory=list)
    upload_status: int = 200
    port: int = 0
    _server: asyncio.Server | None = None

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            method, target, _ = lines[0].split(" ", 2)
            headers = {
                k.strip().lower(): v.strip()
                for k, v in (line.split(":", 1) for line in lines[1:] if ":" in line)
            }
            body = await reader.readexactly(int(headers.get("content-length", "0")))
            path = target.split("?", 1)[0]
            if method == "GET" and path in self.files:
                status, payload = 200, self.files[path]
            elif method == "GET":
                status, payload = 404, b"not found"
            else:
                self.uploads.append((method, path, body))
                status, payload = self.upload_status, b""
            writer.write(
                f"HTTP/1.1 {status} X\r\nContent-Length: {len(payload)}\r\n"
                "Connection: close\r\n\r\n".encode()
                + payload
            )
            await writer.drain()
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()


def elapsed(start: float) -> float:
    return time.monotonic() - start
