"""The upgrade: path, subprotocol and HTTP Basic auth are checked before any OCPP."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from conftest import PASSWORD, MakeBridge, MqttWatcher, OpenCharger, basic, register, url_of
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from bridge import Bridge
from twin.passwords import scrypt_hash
from twin.registry import ChargerRegistry


async def refused(url: str, **kwargs: object) -> InvalidStatus:
    with pytest.raises(InvalidStatus) as info:
        async with connect(url, **kwargs):  # type: ignore[arg-type]
            pass
    return info.value


def new_id() -> str:
    return f"cp-{uuid.uuid4().hex[:10]}"


async def test_registered_charger_with_its_password_connects(
    bridge: Bridge, open_charger: OpenCharger
) -> None:
    charger = await open_charger()
    assert charger.ws.subprotocol == "ocpp1.6"
    assert (await charger.result("Heartbeat", {}))["currentTime"].endswith("Z")


@pytest.mark.parametrize(
    "case", ["unknown charger", "wrong password", "no credentials", "user is not the id"]
)
async def test_refused_with_401_and_basic_challenge(bridge: Bridge, case: str) -> None:
    charger_id = new_id()
    if case != "unknown charger":
        await register(bridge, charger_id)
    headers = {
        "unknown charger": basic(charger_id, PASSWORD),
        "wrong password": basic(charger_id, "not-the-password"),
        "no credentials": {},
        "user is not the id": basic("someone-else", PASSWORD),
    }[case]
    error = await refused(
        url_of(bridge, charger_id), subprotocols=["ocpp1.6"], additional_headers=headers
    )
    assert error.response.status_code == 401
    assert error.response.headers["WWW-Authenticate"].startswith("Basic ")


async def test_auto_register_lets_an_unknown_charger_in_with_its_password(
    make_bridge: MakeBridge, watcher: MqttWatcher
) -> None:
    bridge = await make_bridge(auto_register=True)
    charger_id = new_id()
    url = url_of(bridge, charger_id)
    async with connect(
        url, subprotocols=["ocpp1.6"], additional_headers=basic(charger_id, PASSWORD)
    ) as ws:
        assert ws.subprotocol == "ocpp1.6"
    # From now on the password it registered with is the one that counts.
    error = await refused(
        url, subprotocols=["ocpp1.6"], additional_headers=basic(charger_id, "another")
    )
    assert error.response.status_code == 401
    async with connect(
        url, subprotocols=["ocpp1.6"], additional_headers=basic(charger_id, PASSWORD)
    ):
        pass


async def test_auto_registered_passwords_get_keyed_hashes_and_short_ones_are_refused(
    make_bridge: MakeBridge, watcher: MqttWatcher
) -> None:
    bridge = await make_bridge(auto_register=True)
    assert bridge.db is not None
    charger_id = new_id()
    async with connect(
        url_of(bridge, charger_id),
        subprotocols=["ocpp1.6"],
        additional_headers=basic(charger_id, PASSWORD),
    ):
        pass
    row = await bridge.db.fetchone(
        "SELECT password_hash FROM chargers WHERE charger_id = ?", (charger_id,)
    )
    assert row is not None and str(row[0]).startswith("hmac-sha256$")
    short = new_id()
    answer = await refused(
        url_of(bridge, short),
        subprotocols=["ocpp1.6"],
        additional_headers=basic(short, "fifteen-chars-x"),
    )
    assert answer.response.status_code == 401
    assert b"at least 16 characters" in answer.response.body
    assert not await bridge.server.registry.registered(short)  # type: ignore[union-attr]


async def test_a_restarted_bridge_admits_old_scrypt_hashes_and_replaces_them(
    make_bridge: MakeBridge, watcher: MqttWatcher
) -> None:
    """Chargers registered before the keyed hash keep connecting; each old hash is
    replaced at its first success, so the next restart checks it in microseconds."""
    bridge = await make_bridge()
    assert bridge.db is not None
    charger_id = new_id()
    await bridge.db.execute(
        "INSERT INTO chargers (charger_id, password_hash, tags, created_at) VALUES (?, ?, '[]', 0)",
        (charger_id, scrypt_hash(PASSWORD, 8)),
    )
    async with connect(
        url_of(bridge, charger_id),
        subprotocols=["ocpp1.6"],
        additional_headers=basic(charger_id, PASSWORD),
    ):
        pass
    row = await bridge.db.fetchone(
        "SELECT password_hash FROM chargers WHERE charger_id = ?", (charger_id,)
    )
    assert row is not None and str(row[0]).startswith("hmac-sha256$")
    again = await make_bridge()  # a fresh process: nothing cached
    async with connect(
        url_of(again, charger_id),
        subprotocols=["ocpp1.6"],
        additional_headers=basic(charger_id, PASSWORD),
    ):
        pass


async def test_wrong_path_is_404_and_bad_id_is_400(bridge: Bridge) -> None:
    headers = basic("x", PASSWORD)
    error = await refused(
        f"ws://127.0.0.1:{bridge.port}/other/x",
        subprotocols=["ocpp1.6"],
        additional_headers=headers,
    )
    assert error.response.status_code == 404
    error = await refused(
        f"ws://127.0.0.1:{bridge.port}/ocpp/bad%23id",
        subprotocols=["ocpp1.6"],
        additional_headers=headers,
    )
    assert error.response.status_code == 400


async def test_a_password_changed_or_charger_removed_elsewhere_counts_at_once(
    bridge: Bridge,
) -> None:
    """The API changes passwords and removes chargers in its own process: the bridge's
    cache of verified passwords must not let the old password in afterwards."""
    assert bridge.db is not None
    charger_id = new_id()
    await register(bridge, charger_id)
    url = url_of(bridge, charger_id)
    async with connect(
        url, subprotocols=["ocpp1.6"], additional_headers=basic(charger_id, PASSWORD)
    ):
        pass  # verified, and cached
    api_side = ChargerRegistry(bridge.db)  # another registry, as in the API process

    await api_side.set_password(charger_id, "a-new-password-1")
    old = await refused(
        url, subprotocols=["ocpp1.6"], additional_headers=basic(charger_id, PASSWORD)
    )
    assert old.response.status_code == 401
    new_headers = basic(charger_id, "a-new-password-1")
    async with connect(url, subprotocols=["ocpp1.6"], additional_headers=new_headers):
        pass

    await api_side.delete(charger_id)
    gone = await refused(url, subprotocols=["ocpp1.6"], additional_headers=new_headers)
    assert gone.response.status_code == 401


async def test_an_unregistered_charger_is_disconnected_when_its_shadow_goes(
    bridge: Bridge, open_charger: OpenCharger, watcher: MqttWatcher, prefix: str
) -> None:
    """The API removes the registration, then the twin deletes the shadow and announces it
    on ``shadow/delete/accepted``: the bridge holding the charger closes its socket (1008).
    A shadow deleted while the charger stays registered leaves the connection alone."""
    assert bridge.db is not None
    kept = await open_charger()
    removed = await open_charger()
    for charger in (kept, removed):
        await charger.result("Heartbeat", {})

    await ChargerRegistry(bridge.db).delete(removed.charger_id)
    for charger in (kept, removed):
        watcher.publish(f"{prefix}/chargers/{charger.charger_id}/shadow/delete/accepted", {})
    await asyncio.wait_for(removed.ws.wait_closed(), 5)
    assert removed.ws.close_code == 1008
    assert removed.ws.close_reason == "charger unregistered"
    assert (await kept.result("Heartbeat", {}))["currentTime"]
