"""Subprotocol negotiation (OCPP-J 1.6 section 3.1.2, RFC 6455 section 4.2.2): a charger
that offers no subprotocol the bridge speaks gets a completed handshake without one, then
a close with 1002; it never counts as connected."""

from __future__ import annotations

import asyncio
import logging
import uuid

import pytest
from conftest import PASSWORD, MqttWatcher, basic, register, url_of
from websockets.asyncio.client import connect
from websockets.frames import CloseCode

from bridge import Bridge
from bridge.server import select_subprotocol


@pytest.mark.parametrize("offered", [None, ["ocpp2.1"], ["chat", "ocpp1.5"]])
async def test_no_supported_subprotocol_completes_the_handshake_then_closes_with_1002(
    bridge: Bridge,
    watcher: MqttWatcher,
    prefix: str,
    caplog: pytest.LogCaptureFixture,
    offered: list[str] | None,
) -> None:
    charger_id = f"cp-{uuid.uuid4().hex[:10]}"
    await register(bridge, charger_id)
    async with connect(
        url_of(bridge, charger_id),
        subprotocols=offered,  # type: ignore[arg-type]
        additional_headers=basic(charger_id, PASSWORD),
    ) as ws:
        assert ws.response is not None and ws.response.status_code == 101
        assert ws.subprotocol is None
        assert "Sec-WebSocket-Protocol" not in ws.response.headers
        async with asyncio.timeout(5):
            await ws.wait_closed()
        assert ws.close_code == CloseCode.PROTOCOL_ERROR
        assert ws.close_reason is not None
        assert "ocpp2.0.1" in ws.close_reason and "ocpp1.6" in ws.close_reason
    lines = [r.getMessage() for r in caplog.records if charger_id in r.getMessage()]
    assert any("no supported subprotocol" in line for line in lines), lines
    # Never connected: no presence, and the charger is not held.
    assert charger_id not in bridge.server.connections  # type: ignore[union-attr]
    assert watcher.on(f"{prefix}/chargers/{charger_id}/presence") == []


def test_the_first_supported_subprotocol_of_the_chargers_list_is_chosen() -> None:
    assert select_subprotocol(["ocpp2.0.1", "ocpp1.6"]) == "ocpp2.0.1"
    assert select_subprotocol(["ocpp1.6", "ocpp2.0.1"]) == "ocpp1.6"
    assert select_subprotocol(["ocpp2.1", "ocpp2.0.1"]) == "ocpp2.0.1"
    assert select_subprotocol(["ocpp1.6", "ocpp1.5"]) == "ocpp1.6"
    assert select_subprotocol(["ocpp1.5"]) is None
    assert select_subprotocol([]) is None


async def test_a_tcp_probe_that_sends_nothing_is_not_logged_as_an_error(
    bridge: Bridge, caplog: pytest.LogCaptureFixture
) -> None:
    """A load balancer's TCP health check opens and closes a connection: no traceback, no
    ERROR (the scale-out run's HAProxy filled the log with them), and the bridge serves on."""
    for _ in range(3):
        _, writer = await asyncio.open_connection("127.0.0.1", bridge.port)
        writer.close()
        await writer.wait_closed()
    await asyncio.sleep(0.3)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    charger_id = f"cp-{uuid.uuid4().hex[:10]}"
    await register(bridge, charger_id)
    async with connect(
        url_of(bridge, charger_id),
        subprotocols=["ocpp1.6"],  # type: ignore[list-item]
        additional_headers=basic(charger_id, PASSWORD),
    ) as ws:
        assert ws.subprotocol == "ocpp1.6"
