"""Settings of a simulated fleet: where to connect, how many chargers, how they behave.

One frozen dataclass, so a run is described by a value that tests, benchmarks and the CLI
build the same way, and a seed makes the run reproducible.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field

__all__ = [
    "OCPP_VERSIONS",
    "ChargerModel",
    "EvMix",
    "FaultScheduleEntry",
    "SessionTiming",
    "SimulatorOptions",
    "parse_ocpp_mix",
]

# The protocol versions a simulated charger can speak (its websocket subprotocol is
# "ocpp" + the version).
OCPP_VERSIONS = ("1.6", "2.0.1")


@dataclass(frozen=True, slots=True)
class ChargerModel:
    """A vendor/model combination; a fleet mixes a few, as real networks do."""

    vendor: str
    model: str
    firmware_version: str
    connectors: int
    max_power_w: float
    phases: int
    # The answer to every SetChargingProfile: "Accepted" (the model does smart charging),
    # "Rejected", "NotSupported", or "CallError" (a CALLERROR NotSupported, as firmware
    # without the Smart Charging feature profile sends).
    profile_answer: str = "Accepted"


DEFAULT_MODELS: tuple[ChargerModel, ...] = (
    ChargerModel("ChargeTwin", "CT-AC22", "1.4.2", 2, 22_000.0, 3),
    ChargerModel("Voltaro", "VX-11", "3.0.7", 1, 11_000.0, 3),
    ChargerModel("Ampera", "HomeBox-7", "2.2.0", 1, 7_360.0, 1),
    ChargerModel("Voltaro", "VX-22D", "3.1.0", 2, 22_000.0, 3),
)


@dataclass(frozen=True, slots=True)
class SessionTiming:
    """When sessions start and how long they last, in wall-clock seconds.

    The demo defaults compress a day: a session of 30-120 s with MeterValues every 5-10 s.
    ``auto_sessions=False`` leaves connectors idle until a RemoteStartTransaction.
    """

    auto_sessions: bool = True
    idle_s: tuple[float, float] = (20.0, 90.0)
    duration_s: tuple[float, float] = (30.0, 120.0)
    plug_delay_s: float = 1.0
    unplug_delay_s: float = 2.0
    # Simulated seconds per wall second for energy and state of charge, so a compressed
    # demo session still delivers a plausible number of kWh.
    time_scale: float = 1.0


@dataclass(frozen=True, slots=True)
class EvMix:
    """The cars that plug in: the share that charges on one phase only, and the range of
    their on-board chargers' current per phase. ``max_current_a`` None: every car takes
    all the charger gives (and charges on all its phases)."""

    single_phase_share: float = 0.0
    max_current_a: tuple[float, float] | None = None


@dataclass(frozen=True, slots=True)
class FaultScheduleEntry:
    """Inject ``kind`` into charger ``index`` at ``at_s`` seconds after the fleet starts."""

    at_s: float
    index: int
    kind: str
    duration_s: float = 60.0
    connector_id: int = 1


@dataclass(frozen=True, slots=True)
class SimulatorOptions:
    """Everything that shapes a simulated fleet.

    ``url`` is the OCPP endpoint without the charger id (``ws://127.0.0.1:9000/ocpp``);
    each charger connects to ``{url}/{id}`` with id ``{id_prefix}{i:05d}``. ``password`` is
    one string for all, or a function of the charger id.
    """

    url: str = "ws://127.0.0.1:9000/ocpp"
    chargers: int = 10
    id_prefix: str = "SIM-"
    first_index: int = 1
    password: str | Callable[[str], str] | None = None
    # MeterValueSampleInterval when the charger boots; 0 picks 5-10 s per charger.
    meter_interval_s: int = 0
    heartbeat_interval_s: int = 300
    sessions: SessionTiming = field(default_factory=SessionTiming)
    evs: EvMix = field(default_factory=EvMix)
    # Charging profiles a reboot keeps (real chargers mostly do; False shows what a
    # central system must do for one that does not: set them again after the boot).
    profiles_survive_reboot: bool = False
    # Expected random faults per charger per hour (0 disables them).
    fault_rate_per_hour: float = 0.0
    fault_duration_s: tuple[float, float] = (30.0, 120.0)
    fault_schedule: tuple[FaultScheduleEntry, ...] = ()
    seed: int | None = None
    # Chargers connect spread over this many seconds (0: all at once).
    ramp_s: float = 0.0
    models: tuple[ChargerModel, ...] = DEFAULT_MODELS
    reconnect_min_s: float = 1.0
    reconnect_max_s: float = 60.0
    # A 401 at the upgrade is a configuration problem: retry slowly, not in a tight loop.
    unauthorized_retry_s: float = 60.0
    boot_retry_s: float = 30.0
    reboot_delay_s: float = 1.0
    response_timeout_s: float = 30.0
    open_timeout_s: float = 10.0
    firmware_install_s: float = 2.0
    # Received calls kept per charger for tests and inspection (bounded: memory stays small).
    keep_received: int = 32
    # Log "connected n/N" every this fraction of the fleet while it starts.
    progress_step: float = 0.1
    # Which OCPP versions the fleet speaks, with their weights: (("1.6", 60), ("2.0.1", 40))
    # makes 60 % of the chargers 1.6 ones; see ``versions()`` for who gets which.
    ocpp_mix: tuple[tuple[str, float], ...] = (("1.6", 1.0),)

    def __post_init__(self) -> None:
        if not self.ocpp_mix:
            raise ValueError("ocpp_mix names no OCPP version")
        for version, weight in self.ocpp_mix:
            if version not in OCPP_VERSIONS:
                raise ValueError(
                    f"OCPP version {version!r} is not simulated; use one of "
                    + ", ".join(OCPP_VERSIONS)
                )
            if not weight >= 0:
                raise ValueError(f"the weight of OCPP {version} must be a number >= 0")
        if sum(weight for _, weight in self.ocpp_mix) <= 0:
            raise ValueError("the weights of ocpp_mix add up to 0")

    def versions(self) -> list[str]:
        """The OCPP version of each charger of the fleet, in index order.

        Spread evenly through the fleet and exact for any size: charger n takes the
        version furthest behind its share among chargers 1..n, so a 60/40 fleet of 5 has
        3 and 2, and the first 10 of 1,000 chargers are already mixed 6/4.
        """
        total = sum(weight for _, weight in self.ocpp_mix)
        shares = [(version, weight / total) for version, weight in self.ocpp_mix]
        counts = dict.fromkeys((version for version, _ in shares), 0)
        chosen: list[str] = []
        for n in range(1, self.chargers + 1):
            version = max(shares, key=lambda item: n * item[1] - counts[item[0]])[0]
            counts[version] += 1
            chosen.append(version)
        return chosen

    def charger_id(self, index: int) -> str:
        return f"{self.id_prefix}{index:05d}"

    def password_for(self, charger_id: str) -> str | None:
        if callable(self.password):
            return self.password(charger_id)
        return self.password

    def rng(self, charger_id: str) -> random.Random:
        """A generator per charger, so one charger's behaviour does not depend on N."""
        if self.seed is None:
            return random.Random()
        return random.Random(f"{self.seed}:{charger_id}")


def parse_ocpp_mix(text: str) -> tuple[tuple[str, float], ...]:
    """``"1.6=60,2.0.1=40"`` as ``SimulatorOptions.ocpp_mix``; ValueError says what is wrong."""
    mix: list[tuple[str, float]] = []
    for part in text.split(","):
        version, sep, weight = part.strip().partition("=")
        version = version.strip()
        if not sep or not version:
            raise ValueError(f"{part.strip()!r} is not VERSION=WEIGHT (e.g. 1.6=60,2.0.1=40)")
        if version not in OCPP_VERSIONS:
            raise ValueError(f"OCPP version {version!r} is not one of {', '.join(OCPP_VERSIONS)}")
        if any(version == seen for seen, _ in mix):
            raise ValueError(f"OCPP version {version} is named twice")
        try:
            value = float(weight)
        except ValueError:
            raise ValueError(
                f"the weight of {version}, {weight.strip()!r}, is not a number"
            ) from None
        if not value >= 0 or value == float("inf"):
            raise ValueError(f"the weight of {version} must be a number >= 0")
        mix.append((version, value))
    if sum(weight for _, weight in mix) <= 0:
        raise ValueError("the weights add up to 0")
    return tuple(mix)
