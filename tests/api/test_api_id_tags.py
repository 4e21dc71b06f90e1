"""Id tags over HTTP, read back through the bridge's own store (what Authorize uses)."""

from __future__ import annotations

from collections.abc import Callable

import httpx
from api_helpers import assert_problem

from bridge.stores import IdTagStore
from chargetwin.database import Database

Auth = Callable[[str], dict[str, str]]


async def test_put_get_list_delete(client: httpx.AsyncClient, auth: Auth, db: Database) -> None:
    store = IdTagStore(db)
    assert (await store.lookup("04E91C2A"))["status"] == "Accepted"  # empty list accepts all
    put = await client.put(
        "/api/v1/id-tags/04E91C2A",
        json={"status": "Blocked", "expiry": "2030-01-01T00:00:00Z"},
        headers=auth("operator"),
    )
    assert put.status_code == 200, put.text
    assert put.json() == {
        "idTag": "04E91C2A",
        "status": "Blocked",
        "expiry": "2030-01-01T00:00:00Z",
    }
    assert (await store.lookup("04E91C2A"))["status"] == "Blocked"
    assert (await store.lookup("UNKNOWN"))["status"] == "Invalid"
    await client.put("/api/v1/id-tags/AAA", json={}, headers=auth("operator"))
    listed = await client.get("/api/v1/id-tags", headers=auth("operator"))
    assert [i["idTag"] for i in listed.json()["items"]] == ["04E91C2A", "AAA"]
    assert listed.json()["total"] == 2
    one = await client.get("/api/v1/id-tags/AAA", headers=auth("operator"))
    assert one.json() == {"idTag": "AAA", "status": "Accepted", "expiry": None}

    assert_problem(await client.get("/api/v1/id-tags", headers=auth("viewer")), 403)
    bad = await client.put("/api/v1/id-tags/X", json={"status": "Maybe"}, headers=auth("operator"))
    assert_problem(bad, 422)
    too_long = await client.put(f"/api/v1/id-tags/{'A' * 21}", json={}, headers=auth("operator"))
    assert_problem(too_long, 422)
    deleted = await client.delete("/api/v1/id-tags/AAA", headers=auth("operator"))
    assert deleted.status_code == 204
    assert_problem(await client.delete("/api/v1/id-tags/AAA", headers=auth("operator")), 404)
    assert_problem(await client.get("/api/v1/id-tags/AAA", headers=auth("operator")), 404)
