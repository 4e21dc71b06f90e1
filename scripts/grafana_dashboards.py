"""Write the Grafana dashboards of the compose deployment (grafana/dashboards/*.json).

    .venv/bin/python scripts/grafana_dashboards.py

The JSON files are what Grafana provisions; this script is where they are changed, so the
six dashboards share one style and their queries stay within what the platform records:
InfluxQL over the measurements of docs/telemetry.md, SQL over the alerts table, PromQL over
the metrics of docs/operations.md. tests/deploy/test_grafana.py checks every query
against those and that the files are current.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

OUT = Path(__file__).resolve().parents[1] / "grafana" / "dashboards"
INFLUX = {"type": "influxdb", "uid": "chargetwin-influxdb"}
POSTGRES = {"type": "grafana-postgresql-datasource", "uid": "chargetwin-postgres"}
PROMETHEUS = {"type": "prometheus", "uid": "chargetwin-prometheus"}
SITE = '"site" =~ /^$site$/'


def influx(query: str, alias: str = "") -> dict[str, Any]:
    return {"datasource": INFLUX, "query": query, "rawQuery": True, "resultFormat":
            "time_series", "alias": alias}  # fmt: skip


def sql(query: str, fmt: str = "table") -> dict[str, Any]:
    return {"datasource": POSTGRES, "rawSql": query, "format": fmt, "rawQuery": True,
            "editorMode": "code"}  # fmt: skip


def prom(expr: str, legend: str = "") -> dict[str, Any]:
    return {"datasource": PROMETHEUS, "expr": expr, "legendFormat": legend}


def panel(
    title: str,
    kind: str,
    targets: list[dict[str, Any]],
    grid: tuple[int, int, int, int],
    *,
    unit: str = "short",
    description: str = "",
    options: dict[str, Any] | None = None,
) -> dict[str, Any]:
    x, y, w, h = grid
    datasource = targets[0]["datasource"]
    return {
        "title": title,
        "type": kind,
        "description": description,
        "datasource": datasource,
        "gridPos": {"x": x, "y": y, "w": w, "h": h},
        "targets": [{**t, "refId": chr(ord("A") + i)} for i, t in enumerate(targets)],
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
        "options": options or {},
    }


def site_variable() -> dict[str, Any]:
    return {
        "name": "site",
        "label": "Site",
        "type": "query",
        "datasource": INFLUX,
        "query": 'SHOW TAG VALUES FROM "presence" WITH KEY = "site"',
        "includeAll": True,
        "multi": True,
        "allValue": ".*",
        "current": {"text": "All", "value": "$__all"},
        "refresh": 2,
    }


def dashboard(
    uid: str, title: str, panels: list[dict[str, Any]], *, sites: bool = True,
    time_from: str = "now-7d",
) -> dict[str, Any]:  # fmt: skip
    for i, p in enumerate(panels):
        p["id"] = i + 1
    return {
        "uid": uid,
        "title": title,
        "tags": ["chargetwin"],
        "timezone": "browser",
        "schemaVersion": 39,
        "version": 1,
        "editable": False,
        "refresh": "1m",
        "time": {"from": time_from, "to": "now"},
        "templating": {"list": [site_variable()] if sites else []},
        "panels": panels,
    }


def fleet_overview() -> dict[str, Any]:
    return dashboard("chargetwin-fleet", "ChargeTwin · Fleet overview", [
        panel("Chargers online now", "stat", [influx(
            'SELECT sum("online") FROM (SELECT last("online") AS "online" FROM "presence" '
            f'WHERE {SITE} GROUP BY "charger")')], (0, 0, 6, 5),
            description="Chargers whose last presence point says online."),
        panel("Chargers offline now", "stat", [influx(
            'SELECT count("online") - sum("online") FROM (SELECT last("online") AS "online" '
            f'FROM "presence" WHERE {SITE} GROUP BY "charger")')], (6, 0, 6, 5)),
        panel("Connector status changes", "timeseries", [influx(
            'SELECT count("status") FROM "connector_status" WHERE $timeFilter AND '
            f'{SITE} GROUP BY time($__interval), "status" fill(0)', "$tag_status")],
            (12, 0, 12, 10)),
        panel("Chargers online over time", "timeseries", [influx(
            'SELECT sum("online") FROM (SELECT last("online") AS "online" FROM "presence" '
            f'WHERE $timeFilter AND {SITE} GROUP BY time($__interval), "charger" fill(previous)) '
            "GROUP BY time($__interval)", "online")], (0, 5, 12, 10)),
        panel("Boots per day", "barchart", [influx(
            f'SELECT sum("count") FROM "boots" WHERE $timeFilter AND {SITE} '
            'GROUP BY time(1d) fill(0)', "boots")], (0, 15, 12, 8),
            description="Many boots of one charger often mean a crash loop."),
        panel("Firmware updates by status", "timeseries", [influx(
            'SELECT count("status") FROM "firmware_status" WHERE $timeFilter AND '
            f'{SITE} GROUP BY time(1h), "status" fill(0)', "$tag_status")], (12, 10, 12, 8)),
        panel("Charger clocks not believed", "table", [influx(
            'SELECT last("status") AS "status", last("seconds") AS "seconds" FROM '
            f'"clock_skew" WHERE $timeFilter AND {SITE} GROUP BY "charger"')],
            (12, 18, 12, 8)),
    ])  # fmt: skip


def energy_and_sessions() -> dict[str, Any]:
    stopped = f"\"event\" = 'stopped' AND {SITE}"
    return dashboard("chargetwin-energy", "ChargeTwin · Energy and sessions", [
        panel("Energy delivered per day", "barchart", [influx(
            f'SELECT sum("energy_wh") / 1000 FROM "sessions" WHERE $timeFilter AND {stopped} '
            'GROUP BY time(1d) fill(0)', "kWh")], (0, 0, 12, 9), unit="kwatth"),
        panel("Sessions per day", "barchart", [influx(
            f'SELECT sum("sessions") FROM "sessions" WHERE $timeFilter AND {stopped} '
            'GROUP BY time(1d) fill(0)', "sessions")], (12, 0, 12, 9)),
        panel("Energy per site", "piechart", [influx(
            f'SELECT sum("energy_wh") / 1000 FROM "sessions" WHERE $timeFilter AND {stopped} '
            'GROUP BY "site"', "$tag_site")], (0, 9, 8, 9), unit="kwatth"),
        panel("Average session", "stat", [
            influx(f'SELECT mean("duration_s") FROM "sessions" WHERE $timeFilter AND {stopped}',
                   "duration"),
            influx(f'SELECT mean("energy_wh") / 1000 FROM "sessions" WHERE $timeFilter AND '
                   f'{stopped}', "energy")], (8, 9, 8, 9)),
        panel("Unsuccessful and zero-energy sessions", "timeseries", [
            influx(f'SELECT sum("sessions") - sum("successful") FROM "sessions" WHERE '
                   f'$timeFilter AND {stopped} GROUP BY time(1d) fill(0)', "unsuccessful"),
            influx(f'SELECT sum("zero_energy") FROM "sessions" WHERE $timeFilter AND {stopped} '
                   'GROUP BY time(1d) fill(0)', "zero energy")], (16, 9, 8, 9)),
        panel("Energy per charger", "table", [influx(
            f'SELECT sum("energy_wh") / 1000 AS "kWh", sum("sessions") AS "sessions" FROM '
            f'"sessions" WHERE $timeFilter AND {stopped} GROUP BY "charger"')], (0, 18, 24, 9)),
    ], time_from="now-30d")  # fmt: skip


def peak_times() -> dict[str, Any]:
    return dashboard("chargetwin-peaks", "ChargeTwin · Peak times", [
        panel("Sessions started per hour", "heatmap", [influx(
            'SELECT count("transaction_id") FROM "sessions" WHERE $timeFilter AND '
            f'"event" = \'started\' AND {SITE} GROUP BY time(1h) fill(0)', "started")],
            (0, 0, 24, 9), description="The darker the cell, the busier the hour."),
        panel("Power drawn (15 min mean, summed over chargers)", "timeseries", [influx(
            'SELECT sum("kw") FROM (SELECT mean("value") / 1000 AS "kw" FROM "meter_values" '
            'WHERE $timeFilter AND "measurand" = \'Power.Active.Import\' AND "unit" = \'W\' '
            f'AND {SITE} GROUP BY time(15m), "charger", "connector") GROUP BY time(15m)',
            "kW")], (0, 9, 24, 9), unit="kwatt"),
        panel("Chargers charging", "timeseries", [influx(
            'SELECT count("status") FROM "connector_status" WHERE $timeFilter AND '
            f'"status" = \'Charging\' AND {SITE} GROUP BY time(1h) fill(0)', "charging")],
            (0, 18, 24, 8)),
    ], time_from="now-14d")  # fmt: skip


def uptime() -> dict[str, Any]:
    return dashboard("chargetwin-uptime", "ChargeTwin · Uptime", [
        panel("Online share per day (fleet)", "timeseries", [influx(
            'SELECT mean("online") * 100 FROM (SELECT last("online") AS "online" FROM '
            f'"presence" WHERE $timeFilter AND {SITE} GROUP BY time(1h), "charger" '
            'fill(previous)) GROUP BY time(1d)', "online %")], (0, 0, 24, 9), unit="percent",
            description="Hourly samples of each charger's presence; the NEVI uptime report "
            "(API: /api/v1/uptime) is the exact 23 CFR 680.116 figure per port."),
        panel("Online share per charger", "table", [influx(
            'SELECT mean("online") * 100 AS "online %" FROM (SELECT last("online") AS "online" '
            f'FROM "presence" WHERE $timeFilter AND {SITE} GROUP BY time(1h), "charger" '
            'fill(previous)) GROUP BY "charger"')], (0, 9, 12, 12), unit="percent"),
        panel("Faults per charger", "table", [influx(
            'SELECT count("status") AS "faults" FROM "connector_status" WHERE $timeFilter AND '
            f'"status" = \'Faulted\' AND {SITE} GROUP BY "charger", "error_code"')],
            (12, 9, 12, 12)),
    ], time_from="now-30d")  # fmt: skip


def alerts() -> dict[str, Any]:
    return dashboard("chargetwin-alerts", "ChargeTwin · Alerts", [
        panel("Firing now", "stat", [sql(
            "SELECT count(*) AS firing FROM alerts WHERE state = 'firing'")], (0, 0, 6, 5)),
        panel("Alerts fired per day", "timeseries", [sql(
            "SELECT date_trunc('day', to_timestamp(fired_at)) AS time, rule, count(*) AS fired "
            "FROM alerts WHERE fired_at IS NOT NULL AND $__unixEpochFilter(fired_at) "
            "GROUP BY 1, 2 ORDER BY 1", "time_series")], (6, 0, 18, 9)),
        panel("Open alerts", "table", [sql(
            "SELECT rule, severity, charger_id AS charger, state, "
            "to_timestamp(active_at) AS since, acknowledged_by FROM alerts "
            "WHERE state IN ('pending', 'firing') ORDER BY active_at DESC LIMIT 200")],
            (0, 9, 24, 12)),
    ], sites=False)  # fmt: skip


def platform_health() -> dict[str, Any]:
    return dashboard("chargetwin-platform", "ChargeTwin · Platform health", [
        panel("Chargers connected", "timeseries", [prom(
            "sum by (instance) (chargetwin_chargers_connected)", "{{instance}}")],
            (0, 0, 12, 8)),
        panel("OCPP calls per second", "timeseries", [prom(
            "sum by (action) (rate(chargetwin_ocpp_calls_total[5m]))", "{{action}}")],
            (12, 0, 12, 8), unit="reqps"),
        panel("CALLERRORs per second", "timeseries", [prom(
            "sum by (code) (rate(chargetwin_ocpp_call_errors_total[5m]))", "{{code}}")],
            (0, 8, 12, 8), unit="reqps"),
        panel("OCPP answer time p99 (frame to shadow)", "timeseries", [prom(
            "histogram_quantile(0.99, sum by (le) "
            "(rate(chargetwin_ocpp_call_duration_seconds_bucket[5m])))", "p99")],
            (12, 8, 12, 8), unit="s"),
        panel("MQTT outbox", "timeseries", [prom(
            "max by (component) (chargetwin_mqtt_outbox_messages)", "{{component}}")],
            (0, 16, 8, 8)),
        panel("Telemetry spooled", "timeseries", [prom(
            "sum(chargetwin_spool_bytes)", "bytes")], (8, 16, 8, 8), unit="bytes"),
        panel("Rules by health", "stat", [prom(
            "sum by (health) (chargetwin_rules)", "{{health}}")], (16, 16, 8, 8)),
        panel("Shadow updates per second", "timeseries", [
            prom("sum(rate(chargetwin_shadow_updates_accepted_total[5m]))", "accepted"),
            prom("sum(rate(chargetwin_shadow_requests_refused_total[5m]))", "refused")],
            (0, 24, 12, 8), unit="reqps"),
        panel("HTTP answers by status", "timeseries", [prom(
            "sum by (status) (rate(chargetwin_http_requests_total[5m]))", "{{status}}")],
            (12, 24, 12, 8), unit="reqps"),
        panel("Campaign chargers by state", "bargauge", [prom(
            "sum by (state) (chargetwin_campaign_chargers)", "{{state}}")], (0, 32, 24, 6)),
    ], sites=False, time_from="now-6h")  # fmt: skip


DASHBOARDS = {
    "fleet-overview.json": fleet_overview,
    "energy-and-sessions.json": energy_and_sessions,
    "peak-times.json": peak_times,
    "uptime.json": uptime,
    "alerts.json": alerts,
    "platform-health.json": platform_health,
}


def render() -> dict[str, str]:
    return {name: json.dumps(make(), indent=2) + "\n" for name, make in DASHBOARDS.items()}


def main() -> int:
    OUT.mkdir(parents=True, exist_ok=True)
    for name, text in render().items():
        (OUT / name).write_text(text)
    print(f"wrote {len(DASHBOARDS)} dashboards to {OUT}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
