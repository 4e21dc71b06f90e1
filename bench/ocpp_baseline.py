"""Baseline for the bridge benchmarks: a bare central system on the ``ocpp`` library.

``ocpp.v16.ChargePoint`` with ``@on`` handlers behind ``websockets.serve``, as the
library's own example does (with the bridge's listen backlog): it answers BootNotification,
Heartbeat, StatusNotification and MeterValues and stores and publishes nothing, no
authentication, no limits. What the
bridge does beyond it (auth, flood limits, MQTT, shadows) is what the comparison shows.

    .venv/bin/python -m bench.ocpp_baseline PORT
"""

from __future__ import annotations

import asyncio
import signal
import sys
from datetime import UTC, datetime
from typing import Any

from ocpp.routing import on
from ocpp.v16 import ChargePoint, call_result
from ocpp.v16.enums import Action, RegistrationStatus
from websockets.asyncio.server import ServerConnection, serve


def _now() -> str:
    return datetime.now(UTC).isoformat()


class CentralSystem(ChargePoint):  # type: ignore[misc]
    @on(Action.boot_notification)  # type: ignore[misc]
    async def on_boot_notification(self, **_: Any) -> call_result.BootNotification:
        return call_result.BootNotification(
            current_time=_now(), interval=300, status=RegistrationStatus.accepted
        )

    @on(Action.heartbeat)  # type: ignore[misc]
    async def on_heartbeat(self, **_: Any) -> call_result.Heartbeat:
        return call_result.Heartbeat(current_time=_now())

    @on(Action.status_notification)  # type: ignore[misc]
    async def on_status_notification(self, **_: Any) -> call_result.StatusNotification:
        return call_result.StatusNotification()

    @on(Action.meter_values)  # type: ignore[misc]
    async def on_meter_values(self, **_: Any) -> call_result.MeterValues:
        return call_result.MeterValues()


async def serve_until_terminated(
    port: int, central_system: type[Any] = CentralSystem, subprotocol: str = "ocpp1.6"
) -> None:
    """Serve ``central_system`` (an ``ocpp`` ChargePoint subclass) per connection until
    SIGTERM; the 2.0.1 baseline (bench.ocpp201_baseline) runs its own class through it."""

    async def on_connect(websocket: ServerConnection) -> None:
        assert websocket.request is not None
        charge_point = central_system(websocket.request.path.rsplit("/", 1)[-1], websocket)
        try:
            await charge_point.start()
        except Exception:  # the socket closed: what start() ends with
            return

    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    async with serve(
        on_connect,
        "127.0.0.1",
        port,
        subprotocols=[subprotocol],  # type: ignore[list-item]
        max_size=64 * 1024,
        ping_interval=20,
        ping_timeout=20,
        backlog=4096,  # as the bridge: the storm measures the server, not SYN retries
    ):
        await stop.wait()


if __name__ == "__main__":
    asyncio.run(serve_until_terminated(int(sys.argv[1])))
