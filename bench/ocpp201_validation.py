"""OCPP 2.0.1 payload checks: compiled (fastjsonschema) against the ``ocpp`` library's own.

    python -m bench.ocpp201_validation [--rounds 5] [--seconds 1.0]

The bridge checks every 2.0.1 payload with a validator ``fastjsonschema`` compiles from the
library's schema file (:func:`bridge.v201.endpoints.compiled`); the baseline, measured in
the same run on the same payloads, is what the library itself does for each message:
``ocpp.messages.validate_payload`` (``jsonschema`` Draft 4 in a thread-pool round trip, its
default) and the same validator called directly (no thread pool). Figures are checks per
second on one core, the median of ``--rounds`` runs of ``--seconds`` each, for valid
payloads (the common case) of three sizes: Heartbeat, StatusNotification, and
TransactionEvent(Updated) with a meter value of six sampled values.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from collections.abc import Callable
from typing import Any

from ocpp.messages import Call, MessageType, get_validator, validate_payload

from bench.machine import describe
from bridge.v201.endpoints import VERSION, compiled

PAYLOADS: dict[str, dict[str, Any]] = {
    "Heartbeat": {},
    "StatusNotification": {
        "timestamp": "2026-01-01T00:00:00Z",
        "connectorStatus": "Occupied",
        "evseId": 1,
        "connectorId": 1,
    },
    "TransactionEvent": {
        "eventType": "Updated",
        "timestamp": "2026-01-01T00:00:00Z",
        "triggerReason": "MeterValuePeriodic",
        "seqNo": 12,
        "transactionInfo": {"transactionId": "tx-000001", "chargingState": "Charging"},
        "evse": {"id": 1, "connectorId": 1},
        "meterValue": [
            {
                "timestamp": "2026-01-01T00:00:00Z",
                "sampledValue": [
                    {"value": 12345.6, "unitOfMeasure": {"unit": "Wh"}},
                    {"value": 7.2, "measurand": "Power.Active.Import"},
                    {"value": 16.0, "measurand": "Current.Import", "phase": "L1"},
                    {"value": 16.1, "measurand": "Current.Import", "phase": "L2"},
                    {"value": 15.9, "measurand": "Current.Import", "phase": "L3"},
                    {"value": 55, "measurand": "SoC", "context": "Sample.Periodic"},
                ],
            }
        ],
    },
}


def rate(check: Callable[[], Any], seconds: float) -> float:
    """Calls of ``check`` per second over about ``seconds``."""
    count, started = 0, time.perf_counter()
    deadline = started + seconds
    while True:
        for _ in range(100):
            check()
        count += 100
        now = time.perf_counter()
        if now >= deadline:
            return count / (now - started)


async def async_rate(check: Callable[[], Any], seconds: float) -> float:
    count, started = 0, time.perf_counter()
    deadline = started + seconds
    while True:
        for _ in range(20):
            await check()
        count += 20
        now = time.perf_counter()
        if now >= deadline:
            return count / (now - started)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=1.0)
    args = parser.parse_args()
    print(describe())
    print(f"checks per second, median of {args.rounds} x {args.seconds:g} s (valid payloads)")
    print(f"{'action':<20}{'compiled':>12}{'library direct':>16}{'library (its path)':>20}")
    for action, payload in PAYLOADS.items():
        check = compiled(action, MessageType.Call)
        library = get_validator(MessageType.Call, action, VERSION)
        message = Call("1", action, payload)
        check(payload)  # valid, or the comparison means nothing
        library.validate(payload)
        fast, direct, pooled = [], [], []
        for _ in range(args.rounds):
            fast.append(rate(lambda c=check, p=payload: c(p), args.seconds))
            direct.append(rate(lambda v=library, p=payload: v.validate(p), args.seconds))
            pooled.append(
                await async_rate(lambda m=message: validate_payload(m, VERSION), args.seconds)
            )
        figures = [statistics.median(f) for f in (fast, direct, pooled)]
        print(
            f"{action:<20}{figures[0]:>12,.0f}{figures[1]:>16,.0f}{figures[2]:>20,.0f}"
            f"   ({figures[0] / figures[2]:.0f}x the library's path)"
        )


if __name__ == "__main__":
    asyncio.run(main())
