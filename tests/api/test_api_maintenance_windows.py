"""Maintenance windows and inspections: the scheduler driven tick by tick with an injected
clock, against the real twin service (desired availability through MQTT) and a real
database (SQLite and PostgreSQL)."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import httpx
from api_helpers import assert_problem

from api.backends import Backend
from chargetwin.shadow_client import ShadowRequestError
from fleet.maintenance import Maintenance
from fleet.windows import Window, cron_trigger
from twin.service import ShadowService

T0 = time.time() + 86_400  # in the future: nothing here happens by the real clock


async def desired0(backend: Backend, charger_id: str) -> Any:
    try:
        document = await backend.shadow_client.get(charger_id)
    except ShadowRequestError as exc:
        assert exc.code == 404
        return None  # no shadow: nothing was ever desired
    return ((document["state"].get("desired") or {}).get("availability") or {}).get("0")


def scheduler_of(backend: Backend) -> Any:
    assert backend.maintenance is not None
    return backend.maintenance.scheduler


async def window(backend: Backend, start: float, end: float, **kw: Any) -> Window:
    assert backend.maintenance is not None
    return await backend.maintenance.windows.create(
        title="w", created_by="test", starts_at=start, ends_at=end, **kw
    )


async def test_api_maintenance_window_takes_out_and_restores_what_was_desired(
    backend: Backend, twin: ShadowService, register: Callable[..., Awaitable[Any]]
) -> None:
    await register("CP-A")
    await register("CP-B")
    await register("CP-C")
    # A: nothing desired, reported Operative. B: desired Inoperative already.
    await backend.shadow_client.update("CP-A", {"reported": {"availability": {"0": "Operative"}}})
    await backend.shadow_client.update("CP-B", {"desired": {"availability": {"0": "Inoperative"}}})
    for charger in ("CP-A", "CP-B", "CP-C"):
        await window(backend, T0 + 100, T0 + 200, charger_id=charger)
    scheduler = scheduler_of(backend)
    await scheduler.tick(T0 + 50)
    assert await desired0(backend, "CP-A") is None
    await scheduler.tick(T0 + 100)
    for charger in ("CP-A", "CP-B", "CP-C"):
        assert await desired0(backend, charger) == "Inoperative"
    # C: an operator puts it back by hand during the window; that is left alone.
    await backend.shadow_client.update("CP-C", {"desired": {"availability": {"0": "Operative"}}})
    await scheduler.tick(T0 + 200)
    assert await desired0(backend, "CP-A") == "Operative"  # the reported value before
    assert await desired0(backend, "CP-B") == "Inoperative"  # not blindly Operative
    assert await desired0(backend, "CP-C") == "Operative"
    assert backend.maintenance is not None
    assert await backend.maintenance.windows.holds() == {}
    runs = await backend.maintenance.windows.runs()
    assert {(r.charger_id, r.state) for r in runs} == {
        (c, "done") for c in ("CP-A", "CP-B", "CP-C")
    }


async def test_api_maintenance_overlapping_windows_keep_the_charger_out_until_the_last_ends(
    backend: Backend, twin: ShadowService, register: Callable[..., Awaitable[Any]]
) -> None:
    await register("CP-1")
    await window(backend, T0 + 100, T0 + 200, charger_id="CP-1")
    await window(backend, T0 + 150, T0 + 300, charger_id="CP-1")
    scheduler = scheduler_of(backend)
    next_edge = await scheduler.tick(T0 + 120)
    assert next_edge == T0 + 150
    assert await desired0(backend, "CP-1") == "Inoperative"
    await scheduler.tick(T0 + 160)
    await scheduler.tick(T0 + 210)  # the first one ended, the second holds it out
    assert await desired0(backend, "CP-1") == "Inoperative"
    assert backend.maintenance is not None
    assert [r.state for r in await backend.maintenance.windows.runs()] == ["done", "active"]
    await scheduler.tick(T0 + 300)
    assert await desired0(backend, "CP-1") == "Operative"
    assert await backend.maintenance.windows.holds() == {}


async def test_api_maintenance_restart_mid_window_and_missed_edges(
    backend: Backend, twin: ShadowService, register: Callable[..., Awaitable[Any]]
) -> None:
    await register("CP-1")
    await register("CP-2")
    await backend.shadow_client.update("CP-1", {"desired": {"availability": {"0": "Operative"}}})
    await window(backend, T0 + 100, T0 + 200, charger_id="CP-1")
    await window(backend, T0 + 10, T0 + 20, charger_id="CP-2")  # missed entirely
    first = scheduler_of(backend)
    await first.tick(T0 + 150)  # a late first look: the missed start is applied
    assert await desired0(backend, "CP-1") == "Inoperative"
    assert await desired0(backend, "CP-2") is None
    # A restart: a new scheduler on the same database continues the window...
    again = Maintenance.build(backend.db, backend.registry, backend.shadow_client).scheduler
    await again.tick(T0 + 160)
    assert backend.maintenance is not None
    assert len(await backend.maintenance.windows.runs()) == 1
    # ... and a missed end is applied when it looks next.
    await again.tick(T0 + 500)
    assert await desired0(backend, "CP-1") == "Operative"


async def test_api_maintenance_site_window_and_cancel_over_http(
    client: httpx.AsyncClient,
    auth: Callable[[str], dict[str, str]],
    backend: Backend,
    twin: ShadowService,
    register: Callable[..., Awaitable[Any]],
) -> None:
    await register("CP-N1", site="north")
    await register("CP-N2", site="north")
    await register("CP-S1", site="south")
    scheduler = scheduler_of(backend)
    scheduler.clock = lambda: T0 + 30
    body = {
        "title": "Transformer work",
        "site": "north",
        "startsAt": datetime.fromtimestamp(T0, UTC).isoformat(),
        "endsAt": datetime.fromtimestamp(T0 + 3600, UTC).isoformat(),
        "createWorkOrder": True,
    }
    assert_problem(
        await client.post("/api/v1/maintenance-windows", json=body, headers=auth("viewer")), 403
    )
    created = await client.post("/api/v1/maintenance-windows", json=body, headers=auth("operator"))
    assert created.status_code == 201, created.text
    assert created.json()["active"] is True and len(created.json()["workOrders"]) == 2
    await scheduler.tick()
    assert [await desired0(backend, c) for c in ("CP-N1", "CP-N2")] == ["Inoperative"] * 2
    listed = await client.get("/api/v1/maintenance-windows", params={"chargerId": "CP-N2"},
                              headers=auth("viewer"))  # fmt: skip
    assert [w["id"] for w in listed.json()] == [created.json()["id"]]
    south = await client.get("/api/v1/maintenance-windows", params={"chargerId": "CP-S1"},
                             headers=auth("viewer"))  # fmt: skip
    assert south.json() == []
    scheduler.clock = lambda: T0 + 60
    cancelled = await client.delete(
        f"/api/v1/maintenance-windows/{created.json()['id']}", headers=auth("operator")
    )
    assert cancelled.status_code == 200 and cancelled.json()["active"] is False
    await scheduler.tick()
    assert [await desired0(backend, c) for c in ("CP-N1", "CP-N2")] == ["Operative"] * 2


async def test_api_maintenance_windows_bad_input(
    client: httpx.AsyncClient, auth: Callable[[str], dict[str, str]], backend: Backend,
    register: Callable[..., Awaitable[Any]],
) -> None:  # fmt: skip
    await register("CP-1")
    start = datetime.fromtimestamp(T0, UTC).isoformat()
    end = datetime.fromtimestamp(T0 + 60, UTC).isoformat()
    bad = [
        {"title": "x", "startsAt": start, "endsAt": end},  # no target
        {"title": "x", "chargerId": "CP-1", "site": "s", "startsAt": start, "endsAt": end},
        {"title": "x", "chargerId": "CP-1", "startsAt": end, "endsAt": start},
        {"title": "x", "chargerId": "CP-1", "startsAt": start},
        {"title": "x", "chargerId": "CP-1", "cron": "0 2 * * 0"},  # no duration
        {"title": "x", "chargerId": "CP-1", "cron": "0 25 * * *", "durationMinutes": 5},
        {"title": "x", "chargerId": "CP-1", "cron": "0 2 * *", "durationMinutes": 5},
        {"title": "x", "chargerId": "CP-1", "cron": "0 2 * * *", "durationMinutes": 5,
         "timezone": "Mars/Olympus"},
        {"title": "x", "chargerId": "CP-9", "startsAt": start, "endsAt": end},  # unknown
        {"title": "x", "chargerId": "CP-1", "startsAt": start, "endsAt": end, "extra": 1},
    ]  # fmt: skip
    for body in bad:
        answer = await client.post(
            "/api/v1/maintenance-windows", json=body, headers=auth("operator")
        )
        assert_problem(answer, 422)
    assert_problem(
        await client.get("/api/v1/maintenance-windows/nope", headers=auth("viewer")), 404
    )
    assert_problem(
        await client.delete("/api/v1/maintenance-windows/nope", headers=auth("operator")), 404
    )


def test_api_maintenance_recurring_occurrences_follow_cron_and_time_zone() -> None:
    # Sundays 03:30 Berlin for 60 min: 22 March is CET (02:30 UTC), 29 March CEST (01:30 UTC).
    recurring = Window("w", "CP-1", None, "w", None, None, None, "30 3 * * 0", 3600.0,
                       "Europe/Berlin", "t", 0.0)  # fmt: skip
    start = datetime(2026, 3, 20, tzinfo=UTC).timestamp()
    end = datetime(2026, 4, 1, tzinfo=UTC).timestamp()
    got = [(datetime.fromtimestamp(o.start, UTC), (o.end - o.start) / 60)
           for o in recurring.occurrences(start, end)]  # fmt: skip
    assert got == [
        (datetime(2026, 3, 22, 2, 30, tzinfo=UTC), 60),
        (datetime(2026, 3, 29, 1, 30, tzinfo=UTC), 60),
    ]
    # An occurrence that began before the range but is still on is included.
    inside = datetime(2026, 3, 22, 3, 0, tzinfo=UTC).timestamp()
    assert len(recurring.occurrences(inside, inside + 1)) == 1
    # crontab weekdays: 0 and 7 are Sunday, 1-5 Monday to Friday.
    assert str(cron_trigger("0 2 * * 7", "UTC").fields[4]) == "sun"
    assert str(cron_trigger("0 2 * * 1-5", "UTC").fields[4]) == "mon,tue,wed,thu,fri"


async def test_api_maintenance_inspections_open_work_orders_once_per_due_time(
    backend: Backend, register: Callable[..., Awaitable[Any]]
) -> None:
    await register("CP-N1", site="north")
    await register("CP-N2", site="north")
    assert backend.maintenance is not None
    created = datetime(2026, 5, 1, 12, 0, tzinfo=UTC).timestamp()
    inspection = await backend.maintenance.inspections.create(
        title="Monthly visual check", cron="0 6 1 * *", timezone="UTC", created_by="t",
        site="north", now=created,
    )  # fmt: skip
    scheduler = scheduler_of(backend)
    await scheduler.tick(created + 3600)
    orders, total = await backend.maintenance.work_orders.list(source="inspection")
    assert total == 0
    # Due 2026-06-01 06:00; the API was down until 2026-08-15: opened once, not three times.
    await scheduler.tick(datetime(2026, 8, 15, tzinfo=UTC).timestamp())
    await scheduler.tick(datetime(2026, 8, 15, 1, tzinfo=UTC).timestamp())
    orders, total = await backend.maintenance.work_orders.list(source="inspection")
    assert total == 2 and {o.charger_id for o in orders} == {"CP-N1", "CP-N2"}
    assert {o.inspection_id for o in orders} == {inspection.id}
    assert (await backend.maintenance.inspections.get(inspection.id)).next_due() == datetime(
        2026, 9, 1, 6, tzinfo=UTC
    ).timestamp()
