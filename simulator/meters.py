"""The electricity meter and the car behind a connector: energy, power, current, SoC.

Values follow a simple physical model so dashboards and rules see plausible curves: the
energy register only rises (OCPP 1.6 section 7.31, Energy.Active.Import.Register), power
tapers above 80 % state of charge as a real battery's does, current is power over voltage
per phase, and the connector warms up with power. Sampled values are built as section 7.45
(SampledValue) describes, with the units of section 7.42 (UnitOfMeasure).
"""

from __future__ import annotations

import random
from datetime import UTC, datetime
from typing import Any

from ocpp.v16.enums import Measurand, ReadingContext, UnitOfMeasure

__all__ = ["Meter", "utc_now"]

NOMINAL_VOLTAGE = 230.0
AMBIENT_C = 22.0
OVERHEAT_C = 92.0
PHASES = ("L1", "L2", "L3")


def utc_now() -> str:
    """An OCPP dateTime (section 2.1.2: UTC, ISO 8601 with a Z)."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


class Meter:
    """One connector's meter plus the state of the car plugged into it."""

    __slots__ = (
        "battery_wh",
        "energy_wh",
        "max_power_w",
        "overheating",
        "phases",
        "power_w",
        "soc",
        "temperature_c",
        "voltage",
    )

    def __init__(self, max_power_w: float, phases: int, energy_wh: float) -> None:
        self.max_power_w = max_power_w
        self.phases = phases
        self.energy_wh = energy_wh
        self.power_w = 0.0
        self.voltage = NOMINAL_VOLTAGE
        self.temperature_c = AMBIENT_C
        self.soc = 0.0
        self.battery_wh = 60_000.0
        self.overheating = False

    def plug_in(self, rng: random.Random) -> None:
        """A new car arrives: its battery size and state of charge are drawn at random."""
        self.battery_wh = rng.choice((40_000.0, 58_000.0, 64_000.0, 77_000.0, 82_000.0))
        self.soc = rng.uniform(8.0, 65.0)
        # Many cars take less than the charger offers (on-board charger limit).
        self.power_w = 0.0

    def advance(self, seconds: float, rng: random.Random, charging: bool) -> None:
        """Move the model on by ``seconds`` of simulated time."""
        if charging and self.soc < 100.0:
            taper = 1.0 if self.soc < 80.0 else max(0.1, (100.0 - self.soc) / 20.0)
            self.power_w = self.max_power_w * taper * rng.uniform(0.93, 0.99)
        else:
            self.power_w = 0.0
        delivered = self.power_w * seconds / 3600.0
        self.energy_wh += delivered
        self.soc = min(100.0, self.soc + 100.0 * delivered / self.battery_wh)
        self.voltage = NOMINAL_VOLTAGE + rng.uniform(-4.0, 4.0)
        target = AMBIENT_C + 18.0 * self.power_w / max(self.max_power_w, 1.0)
        if self.overheating:
            target = OVERHEAT_C
        # First-order lag: temperature follows the target without jumping to it.
        self.temperature_c += (target - self.temperature_c) * min(1.0, seconds / 120.0)
        if self.overheating:
            self.temperature_c = max(self.temperature_c, OVERHEAT_C - 2.0)
        self.temperature_c += rng.uniform(-0.3, 0.3)

    @property
    def register_wh(self) -> int:
        return int(self.energy_wh)

    def sample(
        self, measurands: list[str], context: ReadingContext = ReadingContext.sample_periodic
    ) -> dict[str, Any]:
        """A MeterValue (section 7.33) with one SampledValue per measurand and phase."""
        values: list[dict[str, Any]] = []
        ctx = context.value
        for measurand in measurands:
            if measurand == Measurand.energy_active_import_register:
                values.append(_value(f"{self.register_wh}", ctx, measurand, "Wh", "Outlet"))
            elif measurand == Measurand.power_active_import:
                values.append(_value(f"{self.power_w:.0f}", ctx, measurand, "W", "Outlet"))
            elif measurand == Measurand.current_import:
                per_phase = self.power_w / (self.voltage * self.phases)
                for phase in PHASES[: self.phases]:
                    values.append(_value(f"{per_phase:.1f}", ctx, measurand, "A", "Outlet", phase))
            elif measurand == Measurand.voltage:
                for phase in PHASES[: self.phases]:
                    volts = f"{self.voltage:.1f}"
                    values.append(_value(volts, ctx, measurand, "V", "Outlet", f"{phase}-N"))
            elif measurand == Measurand.temperature:
                temp = f"{self.temperature_c:.1f}"
                values.append(_value(temp, ctx, measurand, UnitOfMeasure.celsius, "Body"))
            elif measurand == Measurand.soc:
                values.append(_value(f"{self.soc:.0f}", ctx, measurand, "Percent", "EV"))
        return {"timestamp": utc_now(), "sampledValue": values}


def _value(
    value: str, context: str, measurand: str, unit: str, location: str, phase: str | None = None
) -> dict[str, Any]:
    entry = {
        "value": value,
        "context": context,
        "format": "Raw",
        "measurand": str(measurand),
        "location": location,
        "unit": str(unit),
    }
    if phase is not None:
        entry["phase"] = phase
    return entry
