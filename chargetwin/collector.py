"""Garbage collector settings for a service process that holds many long-lived objects.

Why: CPython's cyclic collector scans every tracked object of the oldest generation in a
full collection, while the whole process waits. A bridge holding 10,000 chargers tracks
over a million objects, so a full collection takes 0.5-2 s on a small machine, and with the
default thresholds the objects of new connections trigger one every few thousand
connections: a reconnect storm of 5,000 chargers ran into several of them and waited
seconds for its BootNotification answers (``docs/bridge-benchmarks.md``).

Two standard tunings (Python's ``gc`` documentation, "gc.freeze"):

- :func:`gc.freeze` once the components have started: modules, classes and compiled
  schemas are never collected, so no collection scans them again;
- a higher threshold for the oldest generation: full collections become rare (CPython
  additionally waits until the objects promoted since the last one exceed a quarter of
  the long-lived ones). The young generations keep their defaults, so short-lived cycles
  are still freed within milliseconds.

What a full collection frees is garbage in reference cycles; the bridge keeps a closed
connection out of cycles (``bridge.connections``, ``bridge.server.ChargerWebSocket``),
so what waits for it is asyncio's socket transport, ~600 bytes per closed connection.
"""

from __future__ import annotations

import gc
import logging

log = logging.getLogger(__name__)

# Full collections run after this many collections of the middle generation (default
# 10); see the module docstring for why and docs/bridge-benchmarks.md for the figures.
OLDEST_GENERATION_THRESHOLD = 1000


def tune_for_long_running() -> None:
    """Freeze what startup created and make full collections rare (call once, started)."""
    gc.collect()
    gc.freeze()
    young, middle, _ = gc.get_threshold()
    gc.set_threshold(young, middle, OLDEST_GENERATION_THRESHOLD)
    log.debug(
        "garbage collector: %d startup objects frozen, thresholds %s",
        gc.get_freeze_count(),
        gc.get_threshold(),
    )
