"""Sessions, KPIs, uptime and the NEVI report over HTTP, from a real SQLite series store
and the bridge's real ``transactions`` table; every figure worked by hand below.

October 2026 for CP-1 (site north), ports 1 and 2, both Available from 1 October:

* port 1 Faulted 10 Oct 10:00-12:00 (120 min); vandalism excluded 11:00-11:30 (30 min)
* CP-1 offline 20 Oct 08:00-08:45 (45 min, both ports)
* maintenance window 25 Oct 02:00-04:00; both ports Unavailable 02:00-04:30 (150 min,
  120 excluded, 30 counted)

port 1: outage 120 + 45 + 150 = 315, excluded 30 + 120 = 150, counted 165
port 2: outage 45 + 150 = 195, excluded 120, counted 75
The period for 2026-10 is 2025-11-01 .. 2026-11-01: 365 days, 525,600 minutes.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from api_helpers import assert_problem

from api.backends import Backend
from bridge.stores import TransactionStore
from fleet.sessions import CSV_FIELDS
from rules.points import NS, Point
from rules.sqlite_series import SQLiteSeriesStore


def t(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


def status(charger: str, connector: str, when: str, value: str) -> Point:
    return Point("connector_status", {"charger": charger, "connector": connector},
                 {"status": value}, int(t(when) * NS))  # fmt: skip


def presence(charger: str, when: str, online: bool) -> Point:
    state = "online" if online else "offline"
    return Point("presence", {"charger": charger}, {"state": state, "online": float(online)},
                 int(t(when) * NS))  # fmt: skip


def power(charger: str, connector: str, when: str, watts: float) -> Point:
    tags = {"charger": charger, "connector": connector, "measurand": "Power.Active.Import",
            "location": "Outlet", "context": "Sample.Periodic"}  # fmt: skip
    return Point("meter_values", tags, {"value": watts}, int(t(when) * NS))


@pytest.fixture
async def monitored(
    backend: Backend,
    tmp_path: Path,
    register: Callable[..., Awaitable[Any]],
    client: httpx.AsyncClient,
    auth: Callable[[str], dict[str, str]],
) -> Backend:
    backend.series = lambda: SQLiteSeriesStore(tmp_path / "series.db")
    await register("CP-1", site="north")
    await register("CP-2", site="north")
    store = SQLiteSeriesStore(tmp_path / "series.db")
    await store.open()
    await store.write([
        status("CP-1", "1", "2026-10-01 00:00", "Available"),
        status("CP-1", "2", "2026-10-01 00:00", "Available"),
        status("CP-1", "1", "2026-10-10 10:00", "Faulted"),
        status("CP-1", "1", "2026-10-10 12:00", "Available"),
        presence("CP-1", "2026-10-20 08:00", False),
        presence("CP-1", "2026-10-20 08:45", True),
        status("CP-1", "1", "2026-10-25 02:00", "Unavailable"),
        status("CP-1", "2", "2026-10-25 02:00", "Unavailable"),
        status("CP-1", "1", "2026-10-25 04:30", "Available"),
        status("CP-1", "2", "2026-10-25 04:30", "Available"),
        power("CP-1", "1", "2026-10-05 18:10", 7000),
        power("CP-1", "1", "2026-10-05 18:30", 11000),
        power("CP-1", "1", "2026-10-05 18:50", 3000),
        power("CP-1", "1", "2026-10-05 20:00", 50000),  # after the session
    ])  # fmt: skip
    await store.close()
    assert backend.maintenance is not None
    await backend.maintenance.windows.create(
        title="Firmware", created_by="t", charger_id="CP-1",
        starts_at=t("2026-10-25 02:00"), ends_at=t("2026-10-25 04:00"),
    )  # fmt: skip
    answer = await client.post("/api/v1/outage-exclusions", headers=auth("operator"), json={
        "chargerId": "CP-1", "connectorId": 1, "startsAt": "2026-10-10T11:00:00Z",
        "endsAt": "2026-10-10T11:30:00Z", "reason": "vandalism", "note": "cable cut",
    })  # fmt: skip
    assert answer.status_code == 201, answer.text
    transactions = TransactionStore(backend.db)
    await transactions.create_schema()
    one = await transactions.start("CP-1", 1, "TAG1", 1000, t("2026-10-05 18:00"))
    await transactions.stop("CP-1", one.transaction_id, 11000, t("2026-10-05 19:00"), "Local", None)
    two = await transactions.start("CP-1", 2, "TAG2", 0, t("2026-10-06 08:00"))
    await transactions.stop(
        "CP-1", two.transaction_id, 5000, t("2026-10-06 08:30"), "PowerLoss", None
    )
    # As an OCPP 2.0.1 station reports them (bridge.v201.transactions): plugged in before
    # the charge, out after it.
    await transactions.plugged(
        "CP-1", two.transaction_id, t("2026-10-06 07:58"), t("2026-10-06 08:41")
    )
    await transactions.start("CP-2", 1, "TAG1", 0, t("2026-09-01 08:00"))  # still open
    return backend


async def test_api_monitoring_uptime_per_port_with_outages(
    monitored: Backend, client: httpx.AsyncClient, auth: Callable[[str], dict[str, str]]
) -> None:
    answer = await client.get("/api/v1/uptime", params={"chargerId": "CP-1", "month": "2026-10"},
                              headers=auth("viewer"))  # fmt: skip
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert (body["period_start"], body["period_end"], body["period_minutes"]) == (
        "2025-11-01T00:00:00Z", "2026-11-01T00:00:00Z", 525_600,
    )  # fmt: skip
    ports = {p["port_id"]: p for p in body["ports"]}
    one, two = ports["CP-1/1"], ports["CP-1/2"]
    assert (one["outage_minutes"], one["excluded_minutes"], one["counted_outage_minutes"]) == (
        315,
        150,
        165,
    )
    assert (two["outage_minutes"], two["excluded_minutes"], two["counted_outage_minutes"]) == (
        195,
        120,
        75,
    )
    assert one["uptime"] == round((525_600 - 165) / 525_600 * 100, 4)  # 99.9686
    assert two["uptime"] == round((525_600 - 75) / 525_600 * 100, 4)  # 99.9857
    assert one["meets_97_percent"] is True
    rows = [(o["outage_start"], o["outage_duration"], o["excluded_outage"],
             o["excluded_outage_reason"], o["cause"]) for o in one["outages"]]  # fmt: skip
    assert rows == [
        ("2026-10-10T10:00:00Z", 60, False, None, "Faulted"),
        ("2026-10-10T11:00:00Z", 30, True, "vandalism", "Faulted"),
        ("2026-10-10T11:30:00Z", 30, False, None, "Faulted"),
        ("2026-10-20T08:00:00Z", 45, False, None, "Offline"),
        ("2026-10-25T02:00:00Z", 120, True, "scheduled_maintenance", "Unavailable"),
        ("2026-10-25T04:00:00Z", 30, False, None, "Unavailable"),
    ]
    single = await client.get("/api/v1/uptime", params={"port": "CP-1/2", "month": "2026-10"},
                              headers=auth("viewer"))  # fmt: skip
    assert [p["port_id"] for p in single.json()["ports"]] == ["CP-1/2"]
    # September's period ends before any of it: no outage.
    september = await client.get("/api/v1/uptime", params={"site": "north", "month": "2026-09"},
                                 headers=auth("viewer"))  # fmt: skip
    assert {p["uptime"] for p in september.json()["ports"]} == {100.0}


async def test_api_monitoring_sessions_json_and_csv(
    monitored: Backend, client: httpx.AsyncClient, auth: Callable[[str], dict[str, str]]
) -> None:
    viewer = auth("viewer")
    answer = await client.get("/api/v1/sessions", params={"chargerId": "CP-1"}, headers=viewer)
    assert answer.status_code == 200, answer.text
    items = answer.json()["items"]
    assert [s["id_tag"] for s in items] == ["TAG2", "TAG1"]  # newest first
    second, first = items
    assert first == {
        "session_id": first["session_id"], "charger_id": "CP-1", "port_id": "CP-1/1",
        "connector_id": 1, "plug_start_datetime": None, "plug_end_datetime": None,
        "charge_start_datetime": "2026-10-05T18:00:00Z",
        "charge_end_datetime": "2026-10-05T19:00:00Z", "session_duration": 60.0,
        "energy_kwh": 10.0, "peak_kw": 11.0, "successful_completion": True,
        "error_code": None, "ended_by": "customer", "stop_reason": "Local", "id_tag": "TAG1",
    }  # fmt: skip
    assert (second["successful_completion"], second["error_code"], second["peak_kw"]) == (
        False, "PowerLoss", None,
    )  # fmt: skip
    assert (second["plug_start_datetime"], second["plug_end_datetime"]) == (
        "2026-10-06T07:58:00Z", "2026-10-06T08:41:00Z",
    )  # fmt: skip

    async def tags(**params: Any) -> list[str]:
        got = await client.get("/api/v1/sessions", params=params, headers=viewer)
        assert got.status_code == 200, got.text
        return [s["id_tag"] for s in got.json()["items"]]

    assert await tags(idTag="TAG1") == ["TAG1", "TAG1"]
    assert await tags(stopReason="PowerLoss") == ["TAG2"]
    assert await tags(connectorId=2) == ["TAG2"]
    assert await tags(**{"from": "2026-10-01T00:00:00Z", "to": "2026-11-01T00:00:00Z"}) == [
        "TAG2",
        "TAG1",
    ]
    assert await tags(site="north", limit=1, offset=2) == ["TAG1"]
    open_session = (await client.get("/api/v1/sessions", params={"chargerId": "CP-2"},
                                     headers=viewer)).json()["items"][0]  # fmt: skip
    assert (
        open_session["charge_end_datetime"] is None
        and open_session["successful_completion"] is None
    )

    for response in (
        await client.get("/api/v1/sessions", params={"chargerId": "CP-1"},
                         headers={**viewer, "Accept": "text/csv"}),
        await client.get("/api/v1/sessions.csv", params={"chargerId": "CP-1"}, headers=viewer),
    ):  # fmt: skip
        assert response.status_code == 200, response.text
        assert response.headers["content-type"].startswith("text/csv")
        rows = list(csv.DictReader(io.StringIO(response.text)))
        assert list(rows[0]) == list(CSV_FIELDS)
        assert (rows[1]["energy_kwh"], rows[1]["peak_kw"], rows[1]["successful_completion"]) == (
            "10.0", "11.0", "true",
        )  # fmt: skip
        assert (rows[0]["plug_start_datetime"], rows[0]["plug_end_datetime"]) == (
            "2026-10-06T07:58:00Z", "2026-10-06T08:41:00Z",
        )  # fmt: skip
        assert (rows[1]["plug_start_datetime"], rows[1]["plug_end_datetime"]) == ("", "")


async def test_api_monitoring_kpis(
    monitored: Backend, client: httpx.AsyncClient, auth: Callable[[str], dict[str, str]]
) -> None:
    period = {"from": "2026-10-01T00:00:00Z", "to": "2026-11-01T00:00:00Z"}
    answer = await client.get("/api/v1/kpis", params={"scope": "charger", "id": "CP-1", **period},
                              headers=auth("viewer"))  # fmt: skip
    assert answer.status_code == 200, answer.text
    k = answer.json()
    # Two ports x 31 days x 1440 = 89,280 port-minutes, 315 + 195 = 510 of them out.
    assert (k["sessions"], k["energyKwh"], k["chargingHours"], k["ports"]) == (2, 15.0, 1.5, 2)
    assert k["availableHours"] == round((89_280 - 510) / 60, 4)  # 1479.5
    assert k["utilization"] == round(1.5 / 1479.5, 6)
    assert k["successRate"] == 0.5
    assert k["averageSessionMinutes"] == 45.0
    assert k["peakHourOfWeek"] == {"dayOfWeek": "Monday", "hour": 18}  # 5 Oct 2026
    monday_18 = k["byHourOfWeek"][18]
    assert (monday_18["chargingMinutes"], monday_18["sessionsStarted"]) == (60, 1)
    # Counted outages: port 1 fault (90 min in two pieces, one failure), offline 45,
    # maintenance overrun 30; port 2 offline 45, overrun 30: 5 failures, 240 minutes.
    r = k["reliability"]
    assert (r["outages"], r["outageMinutes"], r["mttrOutageMinutes"]) == (5, 240, 48)
    assert r["mtbfHours"] == round((89_280 - 240) / 60 / 5, 3)  # 296.8
    site = await client.get("/api/v1/kpis", params={"scope": "site", "id": "north", **period},
                            headers=auth("viewer"))  # fmt: skip
    assert site.json()["sessions"] == 2
    berlin = await client.get("/api/v1/kpis", headers=auth("viewer"), params={
        "scope": "fleet", "timezone": "Europe/Berlin", **period})  # fmt: skip
    assert berlin.json()["peakHourOfWeek"] == {"dayOfWeek": "Monday", "hour": 20}  # CEST


async def test_api_monitoring_nevi_report(
    monitored: Backend, client: httpx.AsyncClient, auth: Callable[[str], dict[str, str]]
) -> None:
    answer = await client.get("/api/v1/reports/nevi", params={"quarter": "2026Q4"},
                              headers=auth("viewer"))  # fmt: skip
    assert answer.status_code == 200, answer.text
    report = answer.json()
    october = [r for r in report["uptime"] if r["month"] == "2026-10"]
    assert {r["port_id"]: r["counted_outage_minutes"] for r in october} == {
        "CP-1/1": 165, "CP-1/2": 75,
    }  # fmt: skip
    assert len(report["outages"]) == 9 and len(report["sessions"]) == 2
    as_csv = {**auth("viewer"), "Accept": "text/csv"}
    outages = await client.get("/api/v1/reports/nevi", headers=as_csv,
                               params={"quarter": "2026Q4", "table": "outages"})  # fmt: skip
    rows = list(csv.DictReader(io.StringIO(outages.text)))
    assert list(rows[0])[:8] == [
        "outage_id", "port_id", "charger_id", "outage_start", "outage_end", "outage_duration",
        "excluded_outage", "excluded_outage_reason",
    ]  # fmt: skip
    assert sum(float(r["outage_duration"]) for r in rows if r["excluded_outage"] == "false") == 240


async def test_api_monitoring_bad_input(
    monitored: Backend, client: httpx.AsyncClient, auth: Callable[[str], dict[str, str]]
) -> None:
    viewer = auth("viewer")
    for path, params in (
        ("/api/v1/uptime", {"month": "2026-13"}),
        ("/api/v1/uptime", {"month": "2099-01"}),
        ("/api/v1/uptime", {"port": "CP-1"}),
        ("/api/v1/kpis", {"scope": "site"}),
        ("/api/v1/kpis", {"scope": "planet", "id": "x"}),
        ("/api/v1/kpis", {"from": "2026-10-02T00:00:00Z", "to": "2026-10-01T00:00:00Z"}),
        ("/api/v1/kpis", {"from": "2020-01-01T00:00:00Z", "to": "2026-10-01T00:00:00Z"}),
        ("/api/v1/kpis", {"timezone": "Mars/Olympus"}),
        ("/api/v1/reports/nevi", {"quarter": "2026Q5"}),
        ("/api/v1/reports/nevi", {}),
        ("/api/v1/reports/nevi", {"quarter": "2026Q4", "table": "fees"}),
        ("/api/v1/sessions", {"connectorId": -1}),
        ("/api/v1/sessions", {"from": "2026-10-02T00:00:00Z", "to": "2026-10-01T00:00:00Z"}),
    ):
        assert_problem(await client.get(path, params=params, headers=viewer), 422)
    for params in ({"scope": "charger", "id": "CP-404"}, {"scope": "site", "id": "nowhere"}):
        assert_problem(await client.get("/api/v1/kpis", params=params, headers=viewer), 404)
    assert_problem(
        await client.get("/api/v1/uptime", params={"chargerId": "CP-404"}, headers=viewer), 404
    )
    assert_problem(await client.get("/api/v1/sessions"), 401)
    base = {
        "chargerId": "CP-1",
        "startsAt": "2026-10-01T00:00:00Z",
        "endsAt": "2026-10-02T00:00:00Z",
    }
    for body in ({**base, "reason": "bad-luck"}, {**base, "reason": "vandalism",
                 "endsAt": "2026-09-01T00:00:00Z"}, {**base, "reason": "vandalism",
                 "chargerId": "CP-404"}):  # fmt: skip
        answer = await client.post("/api/v1/outage-exclusions", json=body, headers=auth("operator"))
        assert_problem(answer, 422)
    body = {**base, "reason": "vandalism"}
    assert_problem(await client.post("/api/v1/outage-exclusions", json=body, headers=viewer), 403)
    listed = await client.get(
        "/api/v1/outage-exclusions", params={"chargerId": "CP-1"}, headers=viewer
    )
    assert [e["reason"] for e in listed.json()] == ["vandalism"]
    gone = await client.delete(f"/api/v1/outage-exclusions/{listed.json()[0]['id']}",
                               headers=auth("operator"))  # fmt: skip
    assert gone.status_code == 204
    assert_problem(
        await client.delete("/api/v1/outage-exclusions/x", headers=auth("operator")), 404
    )
