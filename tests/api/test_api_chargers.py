"""Registering, listing, filtering, reading and deleting chargers."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import pytest
from api_helpers import assert_problem

from api.backends import Backend
from twin.service import ShadowService

Headers = Callable[[str], dict[str, str]]
Register = Callable[..., Awaitable[dict[str, Any]]]


async def test_registering_answers_201_with_a_location_and_the_charger(
    client: httpx.AsyncClient, auth: Headers, backend: Backend
) -> None:
    body = {
        "id": "CP-1",
        "password": "correct-horse-battery",
        "site": "north",
        "tags": ["dc"],
        "description": "bay 1",
    }
    response = await client.post("/api/v1/chargers", json=body, headers=auth("admin"))
    assert response.status_code == 201, response.text
    assert response.headers["location"] == "/api/v1/chargers/CP-1"
    charger = response.json()
    assert charger["id"] == "CP-1" and charger["site"] == "north" and charger["tags"] == ["dc"]
    assert charger["online"] is False and charger["version"] == 0 and charger["hasPassword"]
    assert "password" not in charger
    assert await backend.registry.verify("CP-1", "correct-horse-battery")


async def test_registering_twice_is_a_409(
    client: httpx.AsyncClient, auth: Headers, register: Register
) -> None:
    await register("CP-1")
    response = await client.post(
        "/api/v1/chargers",
        json={"id": "CP-1", "password": "another-password"},
        headers=auth("admin"),
    )
    assert_problem(response, 409)


@pytest.mark.parametrize(
    ("body", "pointer"),
    [
        ({"id": "bad/id", "password": "long-enough-password"}, "/id"),
        ({"id": "x" * 49, "password": "long-enough-password"}, "/id"),
        ({"id": "CP+1", "password": "long-enough-password"}, "/id"),
        ({"id": "CP-1", "password": "short"}, "/password"),
        ({"id": "CP-1", "password": "fifteen-chars-x"}, "/password"),
        ({"id": "CP-1", "password": "p" * 65}, "/password"),
        ({"id": "CP-1"}, "/password"),
        ({"id": "CP-1", "password": "long-enough-password", "colour": "red"}, "/colour"),
        ({"id": "CP-1", "password": "long-enough-password", "tags": "dc"}, "/tags"),
    ],
)
async def test_invalid_registrations_are_422_with_a_pointer(
    client: httpx.AsyncClient, auth: Headers, body: dict[str, Any], pointer: str
) -> None:
    response = await client.post("/api/v1/chargers", json=body, headers=auth("admin"))
    problem = assert_problem(response, 422)
    assert pointer in [e.get("pointer") for e in problem["errors"]], problem


async def report(backend: Backend, charger_id: str, reported: dict[str, Any]) -> None:
    """What the bridge does when a charger boots and reports (through the real twin)."""
    await backend.shadow_client.update(charger_id, {"reported": reported})


def fleet_state(vendor: str, firmware: str, online: bool, status: str) -> dict[str, Any]:
    return {
        "chargePoint": {"vendor": vendor, "model": f"{vendor}-M1"},
        "firmware": {"version": firmware},
        "connection": {"online": online},
        "connectors": {"0": {"status": "Available"}, "1": {"status": status}},
    }


@pytest.fixture
async def fleet(twin: ShadowService, backend: Backend, register: Register) -> None:
    """CP-A online ABB, CP-B offline Alpitronic with a fault and a delta, CP-C never seen."""
    for charger_id in ("CP-A", "CP-B", "CP-C"):
        await register(charger_id)
    await report(backend, "CP-A", fleet_state("ABB", "1.0", True, "Charging"))
    await report(backend, "CP-B", fleet_state("Alpitronic", "2.1", False, "Faulted"))
    await backend.shadow_client.update("CP-B", {"desired": {"config": {"HeartbeatInterval": "60"}}})


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("", ["CP-A", "CP-B", "CP-C"]),
        ("online=true", ["CP-A"]),
        ("online=false", ["CP-B", "CP-C"]),
        ("vendor=ABB", ["CP-A"]),
        ("model=Alpitronic-M1", ["CP-B"]),
        ("firmwareVersion=2.1", ["CP-B"]),
        ("status=Faulted", ["CP-B"]),
        ("status=Available", ["CP-A", "CP-B"]),
        ("hasDelta=true", ["CP-B"]),
        ("hasDelta=false", ["CP-A", "CP-C"]),
        ("online=false&hasDelta=false", ["CP-C"]),
        ("vendor=ABB&online=false", []),
    ],
)
async def test_listing_filters_and_counts(
    client: httpx.AsyncClient, auth: Headers, fleet: None, query: str, expected: list[str]
) -> None:
    response = await client.get(f"/api/v1/chargers?{query}", headers=auth("viewer"))
    assert response.status_code == 200, response.text
    page = response.json()
    assert [c["id"] for c in page["items"]] == expected
    assert page["total"] == len(expected)


async def test_listing_pages_with_a_total(
    client: httpx.AsyncClient, auth: Headers, fleet: None
) -> None:
    first = (await client.get("/api/v1/chargers?limit=2", headers=auth("viewer"))).json()
    second = (await client.get("/api/v1/chargers?limit=2&offset=2", headers=auth("viewer"))).json()
    assert [c["id"] for c in first["items"]] == ["CP-A", "CP-B"]
    assert [c["id"] for c in second["items"]] == ["CP-C"]
    assert first["total"] == second["total"] == 3
    assert (first["limit"], second["offset"]) == (2, 2)
    problem = assert_problem(
        await client.get("/api/v1/chargers?limit=0", headers=auth("viewer")), 422
    )
    assert problem["errors"][0]["parameter"] == "limit"


async def test_a_charger_joins_registry_and_shadow_summary(
    client: httpx.AsyncClient, auth: Headers, fleet: None
) -> None:
    a = (await client.get("/api/v1/chargers/CP-A", headers=auth("viewer"))).json()
    assert a["online"] is True and a["vendor"] == "ABB" and a["firmwareVersion"] == "1.0"
    assert a["connectors"] == {"0": "Available", "1": "Charging"} and a["version"] == 1
    c = (await client.get("/api/v1/chargers/CP-C", headers=auth("viewer"))).json()
    assert c["online"] is False and c["version"] == 0 and c["updatedAt"] is None
    assert_problem(await client.get("/api/v1/chargers/CP-Z", headers=auth("viewer")), 404)


async def test_deleting_a_charger_unregisters_it(
    client: httpx.AsyncClient, auth: Headers, register: Register, backend: Backend, twin: object
) -> None:
    await register("CP-1")
    assert (await client.delete("/api/v1/chargers/CP-1", headers=auth("admin"))).status_code == 204
    assert_problem(await client.get("/api/v1/chargers/CP-1", headers=auth("viewer")), 404)
    assert_problem(await client.delete("/api/v1/chargers/CP-1", headers=auth("admin")), 404)
    assert not await backend.registry.exists("CP-1")


async def test_deleting_a_charger_deletes_its_shadow(
    client: httpx.AsyncClient, auth: Headers, register: Register, backend: Backend, twin: object
) -> None:
    await register("CP-2")
    answer = await client.patch(
        "/api/v1/chargers/CP-2/shadow/desired",
        json={"config": {"HeartbeatInterval": "60"}},
        headers=auth("operator"),
    )
    assert answer.status_code == 200, answer.text
    assert await backend.shadows.get_document("CP-2") is not None
    assert (await client.delete("/api/v1/chargers/CP-2", headers=auth("admin"))).status_code == 204
    assert await backend.shadows.get_document("CP-2") is None
