"""The OCPP-J central system: chargers in, device shadows, telemetry and events out.

One process serves many chargers over websockets (``ws://HOST:PORT/ocpp/{charger_id}``,
subprotocols ``ocpp2.0.1`` and ``ocpp1.6``; 2.0.1 in ``bridge.v201``). Per charger it
answers every charger-initiated call, reports what it learns into the charger's shadow over
MQTT, publishes telemetry and events, turns shadow deltas into OCPP calls, and runs
operator commands. It keeps nothing that must survive a
restart except the open sockets (transactions live in the shared database).

Modules, one concept each:

- ``app``            — :class:`Bridge` and :func:`run_bridge`: wiring and lifecycle.
- ``server``         — the websocket server: upgrade checks (path, subprotocol, Basic auth),
  one connection per charger id, MQTT subscriptions per connected charger, presence.
- ``connections``    — one charger's connection: receive loop, flood limit, owned tasks.
- ``frames``         — reading one OCPP-J frame, or the CALLERROR a hostile one deserves.
- ``endpoints``      — OCPP-J framing on top of ``ocpp.v16.ChargePoint``: CALLERRORs for bad
  frames, outgoing calls with a map of futures.
- ``errorlog``       — a charger's protocol errors and log lines, at a bounded rate.
- ``heap``           — freed heap memory back to the system, once a minute.
- ``handlers``       — the charger-initiated OCPP 1.6 messages and their effects.
- ``reconcilers``    — shadow delta -> ChangeConfiguration / ChangeAvailability.
- ``charging_limits`` — desired charging limits -> SetChargingProfile / ClearChargingProfile.
- ``commands``       — MQTT commands -> OCPP calls -> results.
- ``reports``        — topics and payloads the bridge publishes.
- ``stores``         — transactions and id tags in the shared database.
- ``limits``         — the per-charger token bucket.
- ``tasks``          — a small owner for asyncio tasks.
- ``v201``           — OCPP 2.0.1: framing, handlers, device model, transactions,
  reconciliation, connection (its own package; docs/ocpp201.md).

Exceptions raised by the bridge::

    BridgeError
     ├── FrameError                 a charger's frame cannot be used (``error``: the answer)
     └── OutgoingCallError          an OCPP call to a charger did not succeed (``code``)
          ├── InvalidCallError      400: the request does not fit the OCPP schema
          ├── CallTimeoutError      504: no answer in time
          ├── ChargerGoneError      504: the connection closed before the answer
          ├── CallErrorReceived     502: the charger answered CALLERROR
          └── InvalidResponseError  502: the answer does not fit the OCPP schema
"""

from bridge.app import Bridge, BridgeOptions, run_bridge
from bridge.errors import (
    BridgeError,
    CallErrorReceived,
    CallTimeoutError,
    ChargerGoneError,
    InvalidCallError,
    InvalidResponseError,
    OutgoingCallError,
)

__all__ = [
    "Bridge",
    "BridgeError",
    "BridgeOptions",
    "CallErrorReceived",
    "CallTimeoutError",
    "ChargerGoneError",
    "InvalidCallError",
    "InvalidResponseError",
    "OutgoingCallError",
    "run_bridge",
]
