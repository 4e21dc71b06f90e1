"""A realistic OCPP 1.6J charger simulator: thousands of chargers in one asyncio process.

Entry point: ``await run_simulator(SimulatorOptions(url=..., chargers=N), stop)``. Tests and
benchmarks use ``Fleet`` to reach each ``SimulatedCharger`` (inject faults, read state and
received calls) and to read the fleet's counts.

Modules, in layers; a module imports only from layers below its own, so the imports run
one way (``tests/test_layers.py`` checks it)::

    fleets                              a fleet of chargers, scheduled faults, the entry point
    chargers                            SimulatedCharger: connection loop, boot, heartbeat
    links                               answers to the central system's calls (section 5)
    faults  firmwares  diagnostics      behaviours that act on a charger's state
    sessions                            charging sessions and the messages they send
    states                              Charger: what a charger is, call / spawn / close
    connectors                          a connector's state; its status is derived from it
    configurations  meters  profiles  connections  options

A behaviour takes a ``simulator.states.Charger``; the ``SimulatedCharger`` above them is
one, with the loop that opens the connection those behaviours talk through.
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
