"""The electricity meter and the car behind a connector: energy, power, current, SoC.

Values follow a simple physical model so dashboards and rules see plausible curves: the
car draws the lowest of what the charger offers (its charging profiles), what its on-board
charger takes and what its battery accepts (tapering above 80 % state of charge); it ramps
up over a few seconds and drops at once when the offer falls; below 6 A (IEC 61851's
floor) it pauses. A single-phase car draws on L1 only. The energy register only rises
(OCPP 1.6 section 7.31, Energy.Active.Import.Register) and is the integral of the power
reported, and the connector warms up with power. Sampled values are built as section 7.45
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
MIN_CURRENT_A = 6.0  # IEC 61851-1: a car does not charge on a lower offer
RAMP_A_PER_S = 10.0  # how fast a car's current rises toward a higher offer (32 A in ~3 s)


def utc_now() -> str:
    """An OCPP dateTime (section 2.1.2: UTC, ISO 8601 with a Z)."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


class Meter:
    """One connector's meter plus the state of the car plugged into it."""

    __slots__ = (
        "amps",
        "battery_wh",
        "energy_wh",
        "ev_max_a",
        "ev_phases",
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
        self.amps = 0.0  # drawn per phase
        self.ev_phases = phases
        self.ev_max_a = self.max_amps

    @property
    def max_amps(self) -> float:
        """The charger's own rating per phase."""
        return self.max_power_w / (NOMINAL_VOLTAGE * self.phases)

    @property
    def active_phases(self) -> int:
        return min(self.phases, self.ev_phases)

    def plug_in(
        self, rng: random.Random, ev_phases: int | None = None, ev_max_a: float | None = None
    ) -> None:
        """A new car arrives: its battery size and state of charge are drawn at random;
        without ``ev_phases`` / ``ev_max_a`` it takes all the charger can give."""
        self.battery_wh = rng.choice((40_000.0, 58_000.0, 64_000.0, 77_000.0, 82_000.0))
        self.soc = rng.uniform(8.0, 65.0)
        self.ev_phases = ev_phases or self.phases
        self.ev_max_a = ev_max_a if ev_max_a is not None else self.max_amps
        self.power_w = 0.0
        self.amps = 0.0

    def advance(
        self,
        seconds: float,
        rng: random.Random,
        charging: bool,
        offered: tuple[float, int] | None = None,
    ) -> None:
        """Move the model on by ``seconds`` of simulated time: the car settles on a new draw
        and the energy drawn meanwhile goes into the register (a ramp up rose linearly
        over the step; a drop happens at the step, as the car follows a lower offer at
        once). ``offered``: the charger's limit (amperes per phase, phases); None: no
        limit."""
        before_w = self.power_w
        self.voltage = NOMINAL_VOLTAGE + rng.uniform(-4.0, 4.0)
        target = 0.0
        phases = self.active_phases
        if charging and self.soc < 100.0:
            # The charger's rating is in watts: at a high voltage it gives fewer amperes.
            ceiling = min(self.ev_max_a, self.max_power_w / (self.voltage * phases))
            if offered is not None:
                # A car does not switch phases: the offer's numberPhases only informs.
                ceiling = min(ceiling, offered[0])
            if ceiling >= MIN_CURRENT_A:
                taper = 1.0 if self.soc < 80.0 else max(0.1, (100.0 - self.soc) / 20.0)
                target = ceiling * taper * rng.uniform(0.93, 0.99)
        if target > self.amps:
            self.amps = min(target, self.amps + RAMP_A_PER_S * seconds)
        else:
            self.amps = target
        self.power_w = self.amps * self.voltage * phases
        # Without the ramp's share a short session (one step) would deliver nothing.
        drawn_w = (before_w + self.power_w) / 2.0 if self.power_w > before_w else before_w
        delivered = drawn_w * seconds / 3600.0
        self.energy_wh += delivered
        self.soc = min(100.0, self.soc + 100.0 * delivered / self.battery_wh)
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
                for phase in PHASES[: self.active_phases]:
                    values.append(_value(f"{self.amps:.1f}", ctx, measurand, "A", "Outlet", phase))
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
