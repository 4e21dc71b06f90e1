"""The bridge's keepalive (bridge.keepalive): every socket pinged from one task; a charger
that stops answering is failed with 1011 and goes offline, one that answers stays."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from conftest import MakeBridge, MqttWatcher, OpenCharger
from websockets.asyncio.client import ClientConnection, connect
from websockets.asyncio.server import ServerConnection, serve

from bridge.keepalive import FleetKeepalive


@pytest.fixture
async def pair() -> AsyncIterator[tuple[FleetKeepalive, list[ServerConnection], ClientConnection]]:
    """A websockets server whose connections a FleetKeepalive pings, and one client."""
    keepalive = FleetKeepalive(0.2, 0.3, tick=0.05)
    served: list[ServerConnection] = []

    async def handler(ws: ServerConnection) -> None:
        served.append(ws)
        keepalive.watch(ws)
        try:
            await ws.wait_closed()
        finally:
            keepalive.forget(ws)

    # close_timeout: how long a failed connection waits for the peer's close frame.
    async with serve(handler, "127.0.0.1", 0, ping_interval=None, close_timeout=0.2) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        runner = asyncio.create_task(keepalive.run())
        client = await connect(f"ws://127.0.0.1:{port}", ping_interval=None, close_timeout=0.2)
        try:
            yield keepalive, served, client
        finally:
            runner.cancel()
            await client.close()


async def test_a_peer_that_answers_is_pinged_every_interval_and_kept(
    pair: tuple[FleetKeepalive, list[ServerConnection], ClientConnection],
) -> None:
    keepalive, served, _client = pair
    await asyncio.sleep(1.0)
    # A ping every 0.2 s, late by at most the 0.05 s tick: four or five in a second.
    assert 3 <= keepalive.pings_sent <= 5
    assert keepalive.timed_out == 0 and len(keepalive) == 1
    assert served[0].latency > 0  # websockets measured the pongs


async def test_a_peer_that_stops_answering_is_failed_with_1011(
    pair: tuple[FleetKeepalive, list[ServerConnection], ClientConnection],
) -> None:
    keepalive, served, client = pair
    client.transport.pause_reading()  # the charger hangs: pings are never answered
    # Due at 0.2 s, failed 0.3 s later (ticks of 0.05 s), closed 0.2 s after that.
    async with asyncio.timeout(2.0):
        await served[0].wait_closed()
    sent = served[0].protocol.close_sent
    assert sent is not None and sent.code == 1011 and sent.reason == "keepalive ping timeout"
    assert keepalive.timed_out == 1 and len(keepalive) == 0


async def test_a_charger_that_stops_answering_pings_goes_offline(
    make_bridge: MakeBridge, open_charger: OpenCharger, watcher: MqttWatcher
) -> None:
    bridge = await make_bridge(ping_interval=0.3, ping_timeout=0.3)
    quiet = await open_charger(target=bridge)
    alive = await open_charger(target=bridge)
    presence = bridge.topics.presence(quiet.charger_id)
    await watcher.wait_for(presence, lambda m: m and m["online"])
    quiet.ws.transport.pause_reading()
    offline = await watcher.wait_for(presence, lambda m: m and not m["online"], timeout=5.0)
    assert offline["bridge"] == bridge.bridge_id
    # The other charger answered every ping and is still served.
    assert "currentTime" in await alive.result("Heartbeat", {})
    assert bridge.server is not None and bridge.server.keepalive is not None
    assert bridge.server.keepalive.timed_out == 1
    assert bridge.server.keepalive.pings_sent >= 2
    quiet.ws.transport.abort()  # its close handshake would wait for the hung reader


@pytest.mark.allow_errors
@pytest.mark.allow_logged_exceptions
async def test_a_connection_that_cannot_be_pinged_is_tried_again_and_the_task_goes_on(
    pair: tuple[FleetKeepalive, list[ServerConnection], ClientConnection],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """An unexpected error pinging one socket is logged; the turn goes on, the socket is
    tried again an interval later, and the keepalive task keeps running."""
    keepalive, served, _client = pair
    broken = served[0]

    async def failing_ping() -> None:
        raise RuntimeError("transport in a state nobody expected")

    monkeypatch.setattr(broken, "ping", failing_ping)
    await asyncio.sleep(0.5)
    assert keepalive.pings_sent == 0 and len(keepalive) == 1
    assert any("could not ping" in r.getMessage() for r in caplog.records)
    monkeypatch.undo()
    await asyncio.sleep(0.5)
    assert keepalive.pings_sent >= 1 and keepalive.timed_out == 0
