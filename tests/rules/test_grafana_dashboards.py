"""The Grafana dashboards of the compose deployment ask only what the platform records.

Every InfluxQL query runs on a real influxd holding points the recorder made from real
bridge messages, and must return data (a measurement, field or tag the recorder does not
write returns nothing); every SQL query runs on the real alerts table in PostgreSQL; every
PromQL expression names only metrics the platform exports (docs/operations.md). The
provisioning files are valid, name the datasources the panels use, and the JSON files are
what scripts/grafana_dashboards.py writes.
"""

from __future__ import annotations

import json
import re
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from influx_servers import InfluxServer

from chargetwin.database import Database
from rules import measurements
from rules.alerts import AlertStore
from rules.influx import InfluxStore
from rules.points import Point

ROOT = Path(__file__).resolve().parents[2]
GRAFANA = ROOT / "grafana"
DASHBOARDS = sorted((GRAFANA / "dashboards").glob("*.json"))
SITE = "depot-north"


def _targets(kind: str) -> list[tuple[str, str, dict[str, Any]]]:
    out = []
    for path in DASHBOARDS:
        for panel in json.loads(path.read_text())["panels"]:
            for target in panel["targets"]:
                if target["datasource"]["type"] == kind:
                    out.append((path.stem, panel["title"], target))
    return out


def test_dashboards_are_what_the_script_writes() -> None:
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        from grafana_dashboards import render
    finally:
        sys.path.pop(0)
    rendered = render()
    assert sorted(rendered) == [p.name for p in DASHBOARDS]
    for path in DASHBOARDS:
        assert path.read_text() == rendered[path.name], (
            "run: .venv/bin/python scripts/grafana_dashboards.py"
        )


def test_provisioning_is_valid_and_names_every_datasource_the_panels_use() -> None:
    datasources = yaml.safe_load(
        (GRAFANA / "provisioning" / "datasources" / "chargetwin.yaml").read_text()
    )
    uids = {d["uid"]: d["type"] for d in datasources["datasources"]}
    assert datasources["apiVersion"] == 1 and len(uids) == 3
    providers = yaml.safe_load(
        (GRAFANA / "provisioning" / "dashboards" / "chargetwin.yaml").read_text()
    )
    path = providers["providers"][0]["options"]["path"]
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    grafana = compose["services"]["grafana"]
    assert f"./grafana/dashboards:{path}:ro" in grafana["volumes"]
    assert "./grafana/provisioning:/etc/grafana/provisioning:ro" in grafana["volumes"]
    for needed in ("INFLUXDB_PASSWORD", "POSTGRES_PASSWORD"):
        assert needed in grafana["environment"]
    for path_ in DASHBOARDS:
        board = json.loads(path_.read_text())
        assert board["uid"].startswith("chargetwin-") and board["panels"], path_
        for panel in board["panels"]:
            for target in panel["targets"]:
                source = target["datasource"]
                assert uids.get(source["uid"]) == source["type"], (path_.name, panel["title"])


def _messages(now: float) -> list[tuple[str, dict[str, Any]]]:
    """What a bridge and the twin publish for one charging day of one charger."""
    at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now - 3600))
    later = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now - 600))
    return [
        ("events/boot", {"chargePointVendor": "Voltaro", "chargePointModel": "VX-22D",
                         "firmwareVersion": "3.1.0", "timestamp": at}),
        ("presence", {"online": True, "since": now - 7200}),
        ("events/status", {"connectorId": 1, "status": "Charging", "previous": "Preparing",
                           "errorCode": "NoError", "timestamp": at}),
        ("events/status", {"connectorId": 2, "status": "Faulted", "previous": "Available",
                           "errorCode": "GroundFailure", "timestamp": at}),
        ("events/transaction", {"event": "started", "transactionId": 7, "connectorId": 1,
                                "meterStart": 1000, "idTag": "04E91C2A", "timestamp": at}),
        ("telemetry/meterValues", {"connectorId": 1, "timestamp": later, "values": [
            {"value": 7200.0, "measurand": "Power.Active.Import", "unit": "W"},
            {"value": 16.0, "measurand": "Current.Import", "unit": "A", "phase": "L1"}]}),
        ("events/transaction", {"event": "stopped", "transactionId": 7, "connectorId": 1,
                                "meterStart": 1000, "meterStop": 13000, "reason": "EVDisconnected",
                                "startedAt": at, "timestamp": later}),
        # One session that went wrong: no energy, an emergency stop.
        ("events/transaction", {"event": "stopped", "transactionId": 8, "connectorId": 2,
                                "meterStart": 500, "meterStop": 500, "reason": "EmergencyStop",
                                "startedAt": at, "timestamp": later}),
        ("events/firmware", {"status": "Installed", "requestId": 3, "timestamp": later}),
        ("events/clockSkew", {"status": "ahead", "seconds": 95.0, "timestamp": later}),
    ]  # fmt: skip


def _influxql(query: str) -> str:
    """A panel's query as Grafana sends it, its macros filled in."""
    return (
        query.replace("$timeFilter", "time > now() - 3d")
        .replace("$__interval", "1h")
        .replace("/^$site$/", "/^.*$/")
    )


async def test_every_influxql_query_returns_what_the_recorder_wrote(influx: InfluxServer) -> None:
    database = f"g_{int(time.time() * 1000)}"
    store = InfluxStore(influx.url, database)
    await store.open()
    try:
        now = time.time()
        points: list[Point] = []
        # A second charger that went offline, so "offline" counts are not zero either.
        gone = [("CP-G-2", "presence", {"online": False, "since": now - 1800})]
        for charger, kind, body in [("CP-G-1", k, b) for k, b in _messages(now)] + gone:
            topic = f"chargetwin/chargers/{charger}/{kind}"
            conversion = measurements.convert(
                "chargetwin", topic, json.dumps(body).encode(), now, SITE
            )
            assert not conversion.rejections, (kind, conversion.rejections)
            points.extend(conversion.points)
        await store.write(points)
        variable = 'SHOW TAG VALUES FROM "presence" WITH KEY = "site"'
        queries = [("fleet-overview", "site variable", {"query": variable})]
        queries += _targets("influxdb")
        assert len(queries) > 15
        async with httpx.AsyncClient(base_url=influx.url) as http:
            for board, title, target in queries:
                answer = await http.post(
                    "/query", data={"db": database, "q": _influxql(target["query"])}
                )
                assert answer.status_code == 200, (board, title, answer.text)
                result = answer.json()["results"][0]
                assert "error" not in result, (board, title, result["error"])
                values = [
                    v for s in result.get("series", []) for row in s["values"] for v in row[1:]
                ]
                assert any(v not in (None, 0, "") for v in values), (
                    f"{board} / {title}: no data; does it name a measurement, field or tag "
                    f"the recorder writes (docs/telemetry.md)?\n{target['query']}"
                )
    finally:
        await store.close()


@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
async def test_every_sql_query_runs_on_the_alerts_table(db: Database) -> None:
    await AlertStore(db).create_schema()
    targets = _targets("grafana-postgresql-datasource")
    assert targets
    for board, title, target in targets:
        query = re.sub(r"\$__unixEpochFilter\((\w+)\)", r"\1 > 0", target["rawSql"])
        assert "$" not in query, f"{board} / {title}: a Grafana macro this test does not know"
        await db.fetchall(query)  # raises on an unknown table or column


def test_every_promql_expression_names_metrics_the_platform_exports() -> None:
    documented = set(
        re.findall(
            r"^\| `(chargetwin_[a-z_]+)` \|", (ROOT / "docs/operations.md").read_text(), re.M
        )
    )
    assert len(documented) > 10
    from chargetwin import metrics

    source = Path(metrics.__file__).read_text() + "".join(
        p.read_text() for p in ROOT.glob("*/app.py")
    )
    bases = {name.removesuffix("_total") for name in documented}
    for base in bases:
        bare = base.removeprefix("chargetwin_")
        assert f'"{base}"' in source or f'"{bare}"' in source, f"{base} documented, not exported"
    targets = _targets("prometheus")
    assert targets
    for board, title, target in targets:
        for used in re.findall(r"chargetwin_[a-z_]+", target["expr"]):
            base = re.sub(r"_(total|bucket|count|sum)$", "", used)
            assert base in bases, (board, title, used)
