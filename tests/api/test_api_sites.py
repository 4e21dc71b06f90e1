"""Sites over HTTP: list and read, change the desired energy state (merge patch, If-Match,
422 with pointers, roles, audit, wake-up of the allocator)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from api_helpers import assert_problem

from api.backends import Backend
from chargetwin.mqtt import MqttClient
from chargetwin.topics import Topics
from rules.points import Point
from rules.sqlite_series import SQLiteSeriesStore

URL = "/api/v1/sites"
PATCH = {"Content-Type": "application/merge-patch+json"}


async def test_api_sites_are_the_sites_of_registered_chargers(
    client: httpx.AsyncClient,
    auth: Callable[[str], dict[str, str]],
    register: Callable[..., Awaitable[Any]],
) -> None:
    await register("CP-1", site="depot")
    await register("CP-2", site="depot")
    await register("CP-3", site="garage")
    await register("CP-4")
    listed = await client.get(URL, headers=auth("viewer"))
    assert listed.status_code == 200, listed.text
    assert [(s["id"], s["chargers"], s["version"]) for s in listed.json()] == [
        ("depot", 2, 0),
        ("garage", 1, 0),
    ]
    site = await client.get(f"{URL}/depot", headers=auth("viewer"))
    assert site.status_code == 200
    body = site.json()
    assert body["chargers"] == ["CP-1", "CP-2"] and body["desired"] == {}
    assert body["reported"] is None and body["limitNow"]["limitA"] is None
    assert site.headers["ETag"] == '"0"'
    assert_problem(await client.get(f"{URL}/nowhere", headers=auth("viewer")), 404)
    assert_problem(await client.get(URL), 401)


async def test_api_site_energy_patch_validates_audits_and_wakes_the_allocator(
    client: httpx.AsyncClient,
    auth: Callable[[str], dict[str, str]],
    register: Callable[..., Awaitable[Any]],
    backend: Backend,
    mosquitto_url: str,
    topics: Topics,
) -> None:
    await register("CP-1", site="depot")
    wakes: list[dict[str, Any]] = []
    woken = asyncio.Event()
    listener = MqttClient(mosquitto_url, f"test-wake-{topics.prefix}")
    await listener.connect()

    async def on_wake(topic: str, payload: bytes) -> None:
        wakes.append(json.loads(payload))
        woken.set()

    await listener.subscribe_acked(topics.fleet_wake(), on_wake, qos=0)
    try:
        url = f"{URL}/depot/energy"
        body = json.dumps({"limitA": 100, "failsafeA": 8, "strategy": "first-come"})
        assert_problem(
            await client.patch(url, content=body, headers={**PATCH, **auth("viewer")}), 403
        )
        changed = await client.patch(url, content=body, headers={**PATCH, **auth("operator")})
        assert changed.status_code == 200, changed.text
        assert changed.json() == {
            "version": 1,
            "desired": {"limitA": 100, "failsafeA": 8, "strategy": "first-come"},
        }
        assert changed.headers["ETag"] == '"1"'
        await asyncio.wait_for(woken.wait(), 5)
        assert wakes == [{"engine": "energy"}]

        # a stale If-Match: 412; the current one: applied
        stale = await client.patch(
            url, content='{"limitA": 80}', headers={**PATCH, **auth("operator"), "If-Match": '"0"'}
        )
        assert_problem(stale, 412)
        fresh = await client.patch(
            url,
            content='{"limitA": 80, "failsafeA": null}',
            headers={**PATCH, **auth("operator"), "If-Match": '"1"'},
        )
        assert fresh.status_code == 200, fresh.text
        assert fresh.json()["desired"] == {"limitA": 80, "strategy": "first-come"}

        # invalid states: every problem named by its pointer, nothing stored
        bad = {
            "strategy": "loudest",
            "limitA": -1,
            "schedule": [{"cron": "61 * * * *", "durationMinutes": 60, "limitA": 10}],
        }
        invalid = assert_problem(
            await client.patch(url, content=json.dumps(bad), headers={**PATCH, **auth("operator")}),
            422,
        )
        pointers = {e["pointer"] for e in invalid["errors"]}
        assert pointers == {"/strategy", "/limitA"}
        window = {"schedule": [{"cron": "61 * * * *", "durationMinutes": 60}]}
        invalid = assert_problem(
            await client.patch(
                url, content=json.dumps(window), headers={**PATCH, **auth("operator")}
            ),
            422,
        )
        assert {e["pointer"] for e in invalid["errors"]} == {"/schedule/0", "/schedule/0/cron"}
        # a key the state does not have is refused, even as an empty object (a merge
        # patch would turn it into nothing and store the rest)
        unknown = {"limitA": 70, "boost": {}}
        invalid = assert_problem(
            await client.patch(
                url, content=json.dumps(unknown), headers={**PATCH, **auth("operator")}
            ),
            422,
        )
        assert [e["pointer"] for e in invalid["errors"]] == [""]
        assert "boost" in invalid["errors"][0]["message"]
        below = {"failsafeA": 3}
        invalid = assert_problem(
            await client.patch(
                url, content=json.dumps(below), headers={**PATCH, **auth("operator")}
            ),
            422,
        )
        assert "minimum current" in invalid["errors"][0]["message"]
        assert_problem(
            await client.patch(url, content="{", headers={**PATCH, **auth("operator")}), 400
        )
        assert_problem(
            await client.patch(
                f"{URL}/nowhere/energy", content="{}", headers={**PATCH, **auth("operator")}
            ),
            404,
        )
        site = (await client.get(f"{URL}/depot", headers=auth("viewer"))).json()
        assert site["version"] == 2 and site["desired"]["limitA"] == 80

        audited = await client.get(
            "/api/v1/audit", params={"chargerId": "site:depot"}, headers=auth("viewer")
        )
        assert audited.status_code == 200, audited.text
        assert len(audited.json()) == 7
        entries = await backend.audit.list(charger_id="site:depot")
        outcomes = sorted(e.outcome.value for e in entries)
        assert outcomes == sorted(["accepted", "accepted", "precondition-failed"] + ["invalid"] * 4)
    finally:
        await listener.disconnect()


async def test_api_site_schedule_gives_the_limit_now(
    client: httpx.AsyncClient,
    auth: Callable[[str], dict[str, str]],
    register: Callable[..., Awaitable[Any]],
) -> None:
    await register("CP-1", site="depot")
    # a window open all the time (every minute, for two minutes) at 40 A; base 30 kW
    energy = {
        "limitKW": 30,
        "schedule": [{"name": "always", "cron": "* * * * *", "durationMinutes": 2, "limitA": 40}],
    }
    changed = await client.patch(
        f"{URL}/depot/energy", content=json.dumps(energy), headers={**PATCH, **auth("operator")}
    )
    assert changed.status_code == 200, changed.text
    now = (await client.get(f"{URL}/depot", headers=auth("viewer"))).json()["limitNow"]
    assert now["limitA"] == 40 and now["window"] == "always" and now["nextEdge"] is not None
    # 30 kW at 230 V on three phases is 43.5 A: the window's 40 A is lower... and when the
    # base is lower than the window, the window still holds (it replaces the base)
    await client.patch(
        f"{URL}/depot/energy", content='{"limitKW": 20}', headers={**PATCH, **auth("operator")}
    )
    now = (await client.get(f"{URL}/depot", headers=auth("viewer"))).json()["limitNow"]
    assert now["limitA"] == 40
    await client.patch(
        f"{URL}/depot/energy", content='{"schedule": null}', headers={**PATCH, **auth("operator")}
    )
    now = (await client.get(f"{URL}/depot", headers=auth("viewer"))).json()["limitNow"]
    assert round(now["limitA"], 2) == round(20_000 / (230 * 3), 2) and now["window"] is None


def _power(charger: str, connector: str, moment: str, value: float, unit: str = "W") -> Point:
    tags = {"charger": charger, "site": "depot", "connector": connector,
            "measurand": "Power.Active.Import", "unit": unit}  # fmt: skip
    at = datetime.fromisoformat(moment).replace(tzinfo=UTC).timestamp()
    return Point("meter_values", tags, {"value": value}, int(at * 1e9))


async def test_api_site_load_per_step_with_its_peak(
    client: httpx.AsyncClient,
    auth: Callable[[str], dict[str, str]],
    register: Callable[..., Awaitable[Any]],
    backend: Backend,
    tmp_path: Path,
) -> None:
    backend.series = lambda: SQLiteSeriesStore(tmp_path / "series.db")
    await register("CP-1", site="depot")
    await register("CP-2", site="depot")
    store = SQLiteSeriesStore(tmp_path / "series.db")
    await store.open()
    await store.write([
        _power("CP-1", "1", "2026-10-05 18:00", 7000),
        _power("CP-1", "1", "2026-10-05 18:10", 11000),  # mean of the step: 9 kW
        _power("CP-1", "0", "2026-10-05 18:10", 99000),  # the whole charger: not counted twice
        _power("CP-2", "1", "2026-10-05 18:05", 4.5, unit="kW"),
        _power("CP-2", "1", "2026-10-05 18:20", 3000),
        _power("CP-1", "1", "2026-10-05 19:00", 50000),  # after the period
    ])  # fmt: skip
    await store.close()
    url = f"{URL}/depot/load"
    period = {"from": "2026-10-05T18:00:00Z", "to": "2026-10-05T19:00:00Z"}
    answer = await client.get(url, params=period, headers=auth("viewer"))
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert [s["kW"] for s in body["steps"]] == [13.5, 3.0, 0.0, 0.0]
    assert body["peak"] == {"at": "2026-10-05T18:00:00Z", "kW": 13.5}
    assert body["from"] == "2026-10-05T18:00:00Z" and body["step"] == "15m"
    hourly = await client.get(url, params={**period, "step": "1h"}, headers=auth("viewer"))
    assert [s["kW"] for s in hourly.json()["steps"]] == [9.0 + 3.75]

    bad = await client.get(url, params={**period, "step": "15s"}, headers=auth("viewer"))
    assert assert_problem(bad, 422)["errors"][0]["parameter"] == "step"
    many = {"from": "2020-01-01T00:00:00Z", "to": "2026-01-01T00:00:00Z", "step": "1m"}
    assert_problem(await client.get(url, params=many, headers=auth("viewer")), 422)
    backwards = {"from": period["to"], "to": period["from"]}
    assert_problem(await client.get(url, params=backwards, headers=auth("viewer")), 422)
    assert_problem(await client.get(f"{URL}/nowhere/load", headers=auth("viewer")), 404)
