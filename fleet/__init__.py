"""Fleet operations and their engines: what an operator does to many chargers at once.

Modules, one concept each:

- campaigns (``campaigns``: the store; ``rollouts``: the engine that moves every campaign
  a step each tick: canary, waves, thresholds, windows) and ``targets`` (which chargers an
  operation aims at);
- configuration ``profiles`` and drift from them;
- maintenance: ``windows`` (when a charger or site is out), ``inspections`` (a schedule
  that opens work orders), ``work_orders`` (the one table the rules engine, inspections
  and windows write), ``maintenance`` (the scheduler that acts at a window's edges);
- availability and use: ``uptime`` (23 CFR 680.116 as pure functions), ``outages``
  (from the status history), ``sessions`` and ``kpis``;
- ``app``: the ``fleet`` component, which runs the engines in the one leading process
  (:mod:`chargetwin.leadership`); the API only reads and writes the stores and wakes the
  engines over MQTT (``Topics.fleet_wake``).

The engines change chargers the way an operator does: through desired state, which the
twin turns into deltas and the bridge into OCPP calls.
"""
