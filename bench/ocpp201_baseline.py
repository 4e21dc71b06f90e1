"""Baseline for the OCPP 2.0.1 benchmarks: a bare CSMS on the ``ocpp`` library's ``v201``.

``ocpp.v201.ChargePoint`` with ``@on`` handlers behind ``websockets.serve``, as the
library's own example does (with the bridge's listen backlog): it answers
BootNotification (Accepted), Heartbeat, StatusNotification, MeterValues and
TransactionEvent, validating each against the library's schemas, and stores and publishes
nothing, no authentication, no limits, no device-model read. What the bridge does beyond it
(auth, flood limits, the transaction records and their idempotence, MQTT) is what the
comparison shows.

    .venv/bin/python -m bench.ocpp201_baseline PORT
"""

from __future__ import annotations

import asyncio
import sys
from datetime import UTC, datetime
from typing import Any

from ocpp.routing import on
from ocpp.v201 import ChargePoint, call_result

from bench.ocpp_baseline import serve_until_terminated


def _now() -> str:
    return datetime.now(UTC).isoformat()


class Csms(ChargePoint):  # type: ignore[misc]
    @on("BootNotification")  # type: ignore[misc]
    async def on_boot_notification(self, **_: Any) -> call_result.BootNotification:
        return call_result.BootNotification(current_time=_now(), interval=300, status="Accepted")

    @on("Heartbeat")  # type: ignore[misc]
    async def on_heartbeat(self, **_: Any) -> call_result.Heartbeat:
        return call_result.Heartbeat(current_time=_now())

    @on("StatusNotification")  # type: ignore[misc]
    async def on_status_notification(self, **_: Any) -> call_result.StatusNotification:
        return call_result.StatusNotification()

    @on("MeterValues")  # type: ignore[misc]
    async def on_meter_values(self, **_: Any) -> call_result.MeterValues:
        return call_result.MeterValues()

    @on("TransactionEvent")  # type: ignore[misc]
    async def on_transaction_event(self, **_: Any) -> call_result.TransactionEvent:
        return call_result.TransactionEvent()


if __name__ == "__main__":
    asyncio.run(serve_until_terminated(int(sys.argv[1]), Csms, "ocpp2.0.1"))
