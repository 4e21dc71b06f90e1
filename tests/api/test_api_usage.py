"""``GET /api/v1/usage`` on the bridge's real ``transactions`` table and the twin's real
shadows, on SQLite and PostgreSQL (the shared ``database_url`` fixture).

The same sessions as ``test_usage_figures.py``: period 2026-10-05 .. 2026-10-08 UTC,
CP-1 (site north, 2 connectors in its shadow) has S1 (Mon 18:00, 10 kWh, 1 h), S2 (Tue
08:00, 5 kWh, 30 min) and S4 (started Sunday 23:00, 1 h inside the period); CP-2 (north,
no shadow) has S3 (Wed 23:30, still open: 30 min); CP-3 (south) has none.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from api_helpers import assert_problem

from api.backends import Backend
from bridge.stores import TransactionStore
from twin.service import ShadowService

PERIOD = {"from": "2026-10-05T00:00:00Z", "to": "2026-10-08T00:00:00Z"}
Auth = Callable[[str], dict[str, str]]


def t(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


@pytest.fixture
async def used(
    backend: Backend, twin: ShadowService, register: Callable[..., Awaitable[Any]]
) -> Backend:
    await register("CP-1", site="north")
    await register("CP-2", site="north")
    await register("CP-3", site="south")
    await backend.shadow_client.update(
        "CP-1",
        {"reported": {"connectors": {"0": {"status": "Available"},
                                     "1": {"status": "Available"},
                                     "2": {"status": "Charging"}}}},
    )  # fmt: skip
    store = TransactionStore(backend.db)
    await store.create_schema()
    for charger, connector, start, stop, wh in (
        ("CP-1", 1, "2026-10-05 18:00", "2026-10-05 19:00", 10_000),
        ("CP-1", 2, "2026-10-06 08:00", "2026-10-06 08:30", 5_000),
        ("CP-1", 1, "2026-10-04 23:00", "2026-10-05 01:00", 4_000),
    ):
        row = await store.start(charger, connector, "TAG1", 1000, t(start))
        await store.stop(charger, row.transaction_id, 1000 + wh, t(stop), "Local", None)
    await store.start("CP-2", 1, "TAG2", 0, t("2026-10-07 23:30"))  # still open
    return backend


async def usage(client: httpx.AsyncClient, auth: Auth, **params: Any) -> dict[str, Any]:
    answer = await client.get("/api/v1/usage", params=params, headers=auth("viewer"))
    assert answer.status_code == 200, answer.text
    return dict(answer.json())


async def test_api_usage_of_a_site_per_day_hour_and_charger(
    used: Backend, client: httpx.AsyncClient, auth: Auth
) -> None:
    body = await usage(client, auth, site="north", **PERIOD)
    assert (body["site"], body["chargerId"], body["from"], body["to"], body["timezone"]) == (
        "north", None, "2026-10-05T00:00:00Z", "2026-10-08T00:00:00Z", "UTC",
    )  # fmt: skip
    assert body["days"] == [
        {"date": "2026-10-05", "sessions": 1, "energyKwh": 10.0},
        {"date": "2026-10-06", "sessions": 1, "energyKwh": 5.0},
        {"date": "2026-10-07", "sessions": 1, "energyKwh": 0.0},
    ]
    matrix = body["hourOfWeek"]["sessionsStarted"]
    hits = {(d, h): n for d, row in enumerate(matrix) for h, n in enumerate(row) if n}
    assert hits == {(0, 18): 1, (1, 8): 1, (2, 23): 1}
    chargers = {c["chargerId"]: c for c in body["chargers"]}
    assert set(chargers) == {"CP-1", "CP-2"}
    # S4 started before the period: not fetched as a session of it, so not charging time.
    assert chargers["CP-1"] == {
        "chargerId": "CP-1", "ports": 2, "sessions": 2, "energyKwh": 15.0,
        "chargingHours": 1.5, "utilization": round(1.5 / 144, 6),
    }  # fmt: skip
    assert (chargers["CP-2"]["ports"], chargers["CP-2"]["chargingHours"]) == (1, 0.5)
    assert (body["sessions"], body["energyKwh"]) == (3, 15.0)
    assert body["utilization"] == round(2.0 / (3 * 72), 6)


async def test_api_usage_of_one_charger_and_of_the_fleet(
    used: Backend, client: httpx.AsyncClient, auth: Auth
) -> None:
    one = await usage(client, auth, chargerId="CP-2", **PERIOD)
    assert one["chargerId"] == "CP-2"
    assert [d["sessions"] for d in one["days"]] == [0, 0, 1]
    assert [c["chargerId"] for c in one["chargers"]] == ["CP-2"]

    fleet = await usage(client, auth, **PERIOD)
    assert [c["chargerId"] for c in fleet["chargers"]] == ["CP-1", "CP-2", "CP-3"]
    assert fleet["chargers"][2]["utilization"] == 0.0
    assert fleet["sessions"] == 3

    local = await usage(client, auth, chargerId="CP-1", timezone="America/New_York", **PERIOD)
    assert [(d["date"], d["sessions"]) for d in local["days"]] == [
        ("2026-10-04", 0), ("2026-10-05", 1), ("2026-10-06", 1), ("2026-10-07", 0),
    ]  # fmt: skip


async def test_api_usage_defaults_to_the_last_30_days_up_to_now(
    used: Backend, client: httpx.AsyncClient, auth: Auth
) -> None:
    store = TransactionStore(used.db)
    now = time.time()
    row = await store.start("CP-3", 1, "TAG3", 0, now - 3600)
    await store.stop("CP-3", row.transaction_id, 7_500, now - 1800, "Local", None)
    body = await usage(client, auth, chargerId="CP-3")
    assert len(body["days"]) == 30
    today = datetime.now(UTC).date()
    assert body["days"][-1]["date"] in {today.isoformat(), (today - timedelta(days=1)).isoformat()}
    assert (
        body["days"][0]["date"]
        == (datetime.fromisoformat(body["days"][-1]["date"]) - timedelta(days=29))
        .date()
        .isoformat()
    )
    assert (body["sessions"], body["energyKwh"]) == (1, 7.5)
    assert body["from"].endswith("T00:00:00Z")


async def test_api_usage_refusals(used: Backend, client: httpx.AsyncClient, auth: Auth) -> None:
    async def get(role: str | None, **params: Any) -> httpx.Response:
        headers = auth(role) if role else {}
        return await client.get("/api/v1/usage", params=params, headers=headers)

    assert_problem(await get(None), 401)
    assert assert_problem(await get("viewer", chargerId="CP-404"), 404)["type"].endswith(
        "charger-not-found"
    )
    assert assert_problem(await get("viewer", site="nowhere"), 404)["type"].endswith(
        "site-not-found"
    )
    for zone in ("Mars/Olympus", "America", "../../etc/passwd", ""):  # "America": a folder
        bad_zone = assert_problem(await get("viewer", timezone=zone), 422)
        assert bad_zone["errors"][0]["parameter"] == "timezone", zone
    backwards = await get(
        "viewer", **{"from": "2026-10-08T00:00:00Z", "to": "2026-10-05T00:00:00Z"}
    )
    assert assert_problem(backwards, 422)["errors"][0]["parameter"] == "to"
    long = await get("viewer", **{"from": "2025-01-01T00:00:00Z", "to": "2026-10-05T00:00:00Z"})
    assert assert_problem(long, 422)["errors"][0]["parameter"] == "from"
    assert_problem(await get("viewer", **{"from": "yesterday"}), 422)
