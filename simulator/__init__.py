"""A realistic OCPP 1.6J charger simulator: thousands of chargers in one asyncio process.

Entry point: ``await run_simulator(SimulatorOptions(url=..., chargers=N), stop)``. Tests and
benchmarks use ``Fleet`` to reach each ``SimulatedCharger`` (inject faults, read state and
received calls) and to read the fleet's counts.

Modules: ``options`` (settings), ``connections`` (websocket, auth, backoff), ``chargers``
(one charger: connection loop, boot, heartbeat), ``links`` (answers to central-system
calls), ``sessions`` (connectors and charging sessions), ``meters`` (meter model),
``configurations`` (the key store), ``firmwares``, ``diagnostics``, ``faults``, ``fleets``.
"""

from simulator.chargers import ChargerState, SimulatedCharger
from simulator.faults import FaultKind, FirmwareFailure
from simulator.fleets import Fleet, FleetCounts, run_simulator
from simulator.options import ChargerModel, FaultScheduleEntry, SessionTiming, SimulatorOptions

__all__ = [
    "ChargerModel",
    "ChargerState",
    "FaultKind",
    "FaultScheduleEntry",
    "FirmwareFailure",
    "Fleet",
    "FleetCounts",
    "SessionTiming",
    "SimulatedCharger",
    "SimulatorOptions",
    "run_simulator",
]
