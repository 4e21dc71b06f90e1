"""A realistic OCPP 1.6J and 2.0.1 charger simulator: thousands in one asyncio process.

Entry point: ``await run_simulator(SimulatorOptions(url=..., chargers=N), stop)``. Tests and
benchmarks use ``Fleet`` to reach each ``SimulatedCharger`` (inject faults, read state and
received calls) and to read the fleet's counts.

Modules, in layers; a module imports only from layers below its own, so the imports run
one way (``tests/test_layers.py`` checks it)::

    fleets                              a fleet of chargers, scheduled faults, the entry point
    stations                            SimulatedStation: a 2.0.1 station's loop and boot
    chargers                            SimulatedCharger: connection loop, boot, heartbeat
    stationlinks                        2.0.1: answers to the CSMS's requests
    links                               1.6: answers to the central system's calls
    stationupdates                      2.0.1: UpdateFirmware and GetLog
    transactions                        2.0.1: TransactionEvent sessions
    stationstates                       2.0.1: Station, a Charger with a device model
    faults  firmwares  diagnostics      behaviours that act on a charger's state
    sessions                            charging sessions and the messages they send
    states                              Charger: what a charger is, call / spawn / close
    connectors                          a connector's state; its status is derived from it
    devicemodels                        2.0.1: components, variables, Get/SetVariables
    configurations  meters  profiles  connections  options

A 2.0.1 station reuses the 1.6 parts where the logic is the same (the connection loop,
connector state, meter model, session timing, fault switches, firmware download and
checksum, log upload) and differs in its messages.

A behaviour takes a ``simulator.states.Charger``; the ``SimulatedCharger`` above them is
one, with the loop that opens the connection those behaviours talk through.
"""

from simulator.chargers import ChargerState, SimulatedCharger
from simulator.faults import FaultKind, FirmwareFailure
from simulator.fleets import Fleet, FleetCounts, run_simulator
from simulator.options import (
    ChargerModel,
    FaultScheduleEntry,
    SessionTiming,
    SimulatorOptions,
    parse_ocpp_mix,
)
from simulator.stations import SimulatedStation

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
    "SimulatedStation",
    "SimulatorOptions",
    "parse_ocpp_mix",
    "run_simulator",
]
