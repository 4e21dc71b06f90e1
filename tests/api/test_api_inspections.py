"""Scheduled inspections over HTTP: create, list, cancel, and the work orders they open."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import httpx
from api_helpers import assert_problem

from api.backends import Backend

URL = "/api/v1/inspections"


async def test_api_inspection_opens_work_orders_for_every_charger_of_its_site(
    client: httpx.AsyncClient,
    auth: Callable[[str], dict[str, str]],
    register: Callable[..., Awaitable[Any]],
    backend: Backend,
) -> None:
    await register("CP-1", site="north")
    await register("CP-2", site="north")
    await register("CP-3", site="south")
    body = {"title": "Monthly check", "site": "north", "cron": "0 6 1 * *"}
    assert_problem(await client.post(URL, json=body, headers=auth("viewer")), 403)
    created = await client.post(URL, json=body, headers=auth("operator"))
    assert created.status_code == 201, created.text
    inspection = created.json()
    assert inspection["nextDue"] is not None and inspection["lastRunAt"] is None

    listed = (await client.get(URL, headers=auth("viewer"))).json()
    assert [i["id"] for i in listed] == [inspection["id"]]

    # Run the scheduler at the moment the inspection falls due.
    maintenance = backend.maintenance
    assert maintenance is not None
    stored = await maintenance.inspections.get(inspection["id"])
    due = stored.next_due()
    assert due is not None
    await maintenance.scheduler.tick(due + 1)
    orders = (
        await client.get("/api/v1/work-orders", params={"source": "inspection"},
                         headers=auth("viewer"))
    ).json()  # fmt: skip
    items = orders["items"] if isinstance(orders, dict) else orders
    assert sorted(o["chargerId"] for o in items) == ["CP-1", "CP-2"]

    cancelled = await client.delete(f"{URL}/{inspection['id']}", headers=auth("operator"))
    assert cancelled.status_code == 200 and cancelled.json()["cancelledAt"] is not None
    assert (await client.get(URL, headers=auth("viewer"))).json() == []


async def test_api_inspection_bad_input_is_a_problem(
    client: httpx.AsyncClient,
    auth: Callable[[str], dict[str, str]],
    register: Callable[..., Awaitable[Any]],
) -> None:
    await register("CP-1")
    op = auth("operator")
    for body, status in (
        ({"title": "x", "cron": "0 6 1 * *"}, 422),  # neither charger nor site
        ({"title": "x", "chargerId": "CP-1", "site": "s", "cron": "* * * * *"}, 422),
        ({"title": "x", "chargerId": "CP-1", "cron": "not cron"}, 422),
        ({"title": "x", "chargerId": "NOPE", "cron": "0 6 * * *"}, 422),
        ({"title": "x", "chargerId": "CP-1", "cron": "0 6 * * *", "bogus": 1}, 422),
    ):
        assert_problem(await client.post(URL, json=body, headers=op), status)
    assert_problem(await client.get(f"{URL}/nope", headers=auth("viewer")), 404)
    assert_problem(await client.delete(f"{URL}/nope", headers=op), 404)
