"""The upgrade refuses ids outside the charger id alphabet, also for auto-registration."""

from __future__ import annotations

import pytest
from conftest import PASSWORD, MakeBridge, basic
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from twin.registry import ChargerRegistry


@pytest.mark.parametrize(("in_url", "charger_id"), [("%2E%2E", ".."), ("a%3Ab", "a:b")])
async def test_auto_registration_refuses_ids_outside_the_alphabet(
    make_bridge: MakeBridge, in_url: str, charger_id: str
) -> None:
    bridge = await make_bridge(auto_register=True)
    with pytest.raises(InvalidStatus) as info:
        async with connect(
            f"ws://127.0.0.1:{bridge.port}/ocpp/{in_url}",
            subprotocols=["ocpp1.6"],
            additional_headers=basic(charger_id, PASSWORD),
        ):
            pass
    assert info.value.response.status_code == 400
    assert b"invalid charger id" in info.value.response.body
    assert bridge.db is not None
    assert not await ChargerRegistry(bridge.db).exists(charger_id)
