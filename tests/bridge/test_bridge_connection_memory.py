"""A closed connection's objects are freed as soon as it ends, not by a full collection.

With 10,000 chargers held a full garbage collection stops the bridge for about a second
(``chargetwin.collector``), so whatever the bridge builds per connection must stay out of
reference cycles: dropped or replaced, a connection is freed by reference counting alone.
(asyncio's socket transport keeps a cycle of its own, about 600 bytes, left to the
collector.)
"""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest
from conftest import OpenCharger, eventually

from bridge import Bridge
from bridge.connections import ChargerConnection


@pytest.fixture
def no_cycle_collector() -> Iterator[None]:
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def references(connection: ChargerConnection) -> list[weakref.ref[object]]:
    parts = (
        connection,
        connection.handler,
        connection.reconciler,
        connection.commands,
        connection.websocket,  # websockets' own objects too (bridge.server.ChargerWebSocket)
    )
    return [weakref.ref(part) for part in parts]


async def test_dropped_and_replaced_connections_are_freed_without_the_cycle_collector(
    bridge: Bridge, open_charger: OpenCharger, no_cycle_collector: None
) -> None:
    assert bridge.server is not None
    connections = bridge.server.connections
    first = await open_charger()
    await first.boot()
    replaced = references(connections[first.charger_id])

    second = await open_charger(first.charger_id)  # replaces the first
    await second.boot()
    assert connections[first.charger_id] is not replaced[0]()
    await eventually(lambda: all(ref() is None for ref in replaced), what="replaced one freed")

    dropped = references(connections[second.charger_id])
    await second.close()
    await eventually(lambda: all(ref() is None for ref in dropped), what="dropped one freed")
