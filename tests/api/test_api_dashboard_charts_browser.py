"""The dashboard's charts in a real browser: Debian's headless Chromium against the API on a
socket, with sessions in the bridge's real ``transactions`` table, status points in a real
SQLite series store, a firmware catalog and alerts.

Each page is loaded twice: once with ``--dump-dom`` (what the scripts built: uPlot's
canvases, the figures the charts were given, the heatmap's cells) with Chromium's log on
stderr, once with ``--screenshot``, whose PNG path is printed (``pytest -s``) for a person
to look at. Either fails on an uncaught error or any console message of the page (this
Chromium logs every console message as ``INFO:CONSOLE``, errors included, and no failed
request), and on any request the page made that the API answered with an error, which a
browser's console shows as "Failed to load resource".
Skipped where no Chromium is installed; nothing is downloaded.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from html import unescape
from pathlib import Path
from typing import Any

import httpx
import pytest
from api_helpers import free_port
from devtools import page_requests
from fastapi import FastAPI, Request, Response

from api.app import create_app, serve
from api.backends import Backend
from bridge.stores import TransactionStore
from rules.alerts import Alert, AlertStore, fingerprint
from rules.points import NS, Point
from rules.sqlite_series import SQLiteSeriesStore
from twin.service import ShadowService

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
BROWSER_TIMEOUT = 120.0
# What Chromium logs (--enable-logging=stderr) from the page: an exception nobody caught,
# any console message (the dashboard writes none; a refused script or style is one too).
PAGE_ERRORS = re.compile(r"Uncaught|:CONSOLE\b")

pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed")
Auth = Callable[[str], dict[str, str]]
HOST_NAME = "chargetwin.test"  # resolved to 127.0.0.1 by Chromium alone


@pytest.fixture
def database_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path}/chargetwin.db"


@pytest.fixture
def failed_requests() -> list[str]:
    return []


@pytest.fixture
def app(backend: Backend, failed_requests: list[str]) -> FastAPI:
    """The app, noting every request it answers with an error (4xx or 5xx)."""
    app = create_app(backend)

    @app.middleware("http")
    async def note_failures(request: Request, call_next: Any) -> Response:
        response: Response = await call_next(request)
        if response.status_code >= 400:
            failed_requests.append(f"{request.method} {request.url.path} {response.status_code}")
        return response

    return app


@pytest.fixture
async def base_url(app: FastAPI, twin: ShadowService) -> AsyncIterator[str]:
    port = free_port()
    stop = asyncio.Event()
    server = asyncio.create_task(serve(app, "127.0.0.1", port, stop), name="test-charts-api")
    try:
        for _ in range(200):
            with contextlib.suppress(OSError):
                _, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.close()
                await writer.wait_closed()
                break
            await asyncio.sleep(0.025)
        yield f"http://127.0.0.1:{port}/"
    finally:
        stop.set()
        await server


async def chromium(url: str, *mode: str) -> tuple[str, str]:
    """Headless Chromium on ``url`` in ``mode`` (dump or screenshot): stdout and its log."""
    assert CHROMIUM is not None
    with tempfile.TemporaryDirectory() as profile:
        process = await asyncio.create_subprocess_exec(
            CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
            "--no-first-run", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", "--hide-scrollbars", f"--user-data-dir={profile}",
            "--enable-logging=stderr", "--v=0", "--window-size=1400,2000",
            "--virtual-time-budget=8000", *mode, url,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            env={**os.environ, "TZ": "UTC"},  # the days and hours the sessions were made in
        )  # fmt: skip
        try:
            out, err = await asyncio.wait_for(process.communicate(), BROWSER_TIMEOUT)
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()
    return out.decode(), err.decode(errors="replace")


def page_errors(log: str) -> list[str]:
    return [line for line in log.splitlines() if PAGE_ERRORS.search(line)]


async def render(url: str, screenshot: Path, failed_requests: list[str]) -> str:
    """The DOM after the scripts ran; fails on any error the page logged or any request
    it made that failed; saves a PNG."""
    failed_requests.clear()
    dom, log = await chromium(url, "--dump-dom")
    assert page_errors(log) == [], "\n".join(page_errors(log))
    _, shot_log = await chromium(url, f"--screenshot={screenshot}")
    assert page_errors(shot_log) == [], "\n".join(page_errors(shot_log))
    assert failed_requests == []
    size = (await asyncio.to_thread(screenshot.stat)).st_size  # a blank page is ~5 kB
    assert size > 10_000, shot_log[-2000:]
    print(f"screenshot: {screenshot}")
    return dom


def element(dom: str, element_id: str) -> str:
    """The element with ``element_id``: its opening tag and everything up to its end."""
    start = re.search(rf'<(\w+)[^>]*\bid="{element_id}"[^>]*>', dom)
    assert start, f"no #{element_id} in the page"
    tag, depth, at = start.group(1), 0, start.start()
    for match in re.finditer(rf"<(/?){tag}\b[^>]*>", dom[at:]):
        depth += -1 if match.group(1) else 1
        if depth == 0:
            return dom[at : at + match.end()]
    raise AssertionError(f"#{element_id} is not closed")


def text(html: str) -> str:
    return " ".join(unescape(re.sub(r"<[^>]+>", " ", html)).split())


def attribute(html: str, name: str) -> str:
    match = re.search(rf'\b{name}="([^"]*)"', html)
    assert match, f"no {name} in {html[:200]}"
    return unescape(match.group(1))


def local_day(days_ago: int, hour: int) -> float:
    """``hour`` o'clock UTC ``days_ago`` days ago (Chromium runs with TZ=UTC here)."""
    day = datetime.now(UTC).date() - timedelta(days=days_ago)
    return datetime(day.year, day.month, day.day, hour, tzinfo=UTC).timestamp()


@pytest.fixture
async def fleet(
    backend: Backend,
    twin: ShadowService,
    tmp_path: Path,
    register: Callable[..., Awaitable[Any]],
    client: httpx.AsyncClient,
    auth: Auth,
) -> Backend:
    """Three chargers at two sites with a month of sessions, outages, firmware, alerts."""
    series = tmp_path / "series.db"
    backend.series = lambda: SQLiteSeriesStore(series)
    await register("CP-N1", site="north")
    await register("CP-N2", site="north")
    await register("CP-S1", site="south")
    for charger, version in (("CP-N1", "3.1.0"), ("CP-N2", "3.0.0"), ("CP-S1", "3.1.0")):
        await backend.shadow_client.update(charger, {"reported": {
            "connection": {"online": True, "since": time.time() - 86400, "ocppVersion": "1.6"},
            "chargePoint": {"vendor": "Voltaro", "model": "VX-22D"},
            "firmware": {"version": version},
            "connectors": {"1": {"status": "Available"}, "2": {"status": "Available"}},
        }})  # fmt: skip
    for version in ("3.0.0", "3.1.0"):
        answer = await client.post("/api/v1/firmware", headers=auth("operator"), json={
            "vendor": "Voltaro", "model": "VX-22D", "version": version,
            "url": f"http://127.0.0.1:9/vx-22d-{version}.bin", "sha256": "a" * 64,
        })  # fmt: skip
        assert answer.status_code == 201, answer.text

    transactions = TransactionStore(backend.db)
    await transactions.create_schema()
    meter = 0
    # Evenings are busy: 18:00 every day on CP-N1, 08:00 every other day on CP-N2, a few on
    # CP-S1; the last ones today. A session today that would not be over yet takes place
    # a week earlier instead, same weekday and hour: moved to "two hours ago" it landed in
    # whatever hour the test ran, and between 10:00 and 11:00 it made 08:00 the busiest.
    plan = [("CP-N1", 1, d, 18, 90, 22_000) for d in range(0, 20)]
    plan += [("CP-N2", 2, d, 8, 45, 9_000) for d in range(0, 20, 2)]
    plan += [("CP-S1", 1, d, 12, 30, 6_000) for d in (1, 5, 9)]
    for charger, connector, days_ago, hour, minutes, wh in plan:
        start = local_day(days_ago, hour)
        if start + minutes * 60 > time.time():
            start = local_day(days_ago + 7, hour)
        row = await transactions.start(charger, connector, "TAG1", meter, start)
        await transactions.stop(
            charger, row.transaction_id, meter + wh, start + minutes * 60, "Local", None
        )
        meter += wh

    store = SQLiteSeriesStore(series)
    await store.open()
    since = time.time() - 200 * 86400
    points = []
    for charger in ("CP-N1", "CP-N2", "CP-S1"):
        for connector in ("1", "2"):
            points.append(Point("connector_status", {"charger": charger, "connector": connector},
                                {"status": "Available"}, int(since * NS)))  # fmt: skip
    # CP-S1 port 1 was Faulted for 30 days two months ago: south falls below 97%.
    fault = time.time() - 60 * 86400
    for when, value in ((fault, "Faulted"), (fault + 30 * 86400, "Available")):
        points.append(Point("connector_status", {"charger": "CP-S1", "connector": "1"},
                            {"status": value}, int(when * NS)))  # fmt: skip
    # South's load: CP-S1 drew 11 kW for the last two hours (the site view's load chart).
    for minutes in range(0, 120, 5):
        at = time.time() - 7200 + minutes * 60
        tags = {"charger": "CP-S1", "site": "south", "connector": "1",
                "measurand": "Power.Active.Import", "unit": "W"}  # fmt: skip
        points.append(Point("meter_values", tags, {"value": 11_000.0}, int(at * NS)))
    await store.write(points)
    await store.close()
    limit = await client.patch(
        "/api/v1/sites/south/energy", content='{"limitA": 32}',
        headers={"Content-Type": "application/merge-patch+json", **auth("operator")},
    )  # fmt: skip
    assert limit.status_code == 200, limit.text

    alerts = AlertStore(backend.db)
    await alerts.create_schema()
    now = time.time()
    raised = []
    for i, (days_ago, severity) in enumerate(((1, "critical"), (1, "warning"), (3, "warning"))):
        labels = {"alertname": f"rule-{i}", "charger": "CP-N1"}
        at = now - days_ago * 86400
        raised.append(Alert(
            id=f"al_{i}", fingerprint=fingerprint(labels), rule=f"rule-{i}", state="resolved",
            severity=severity, labels=labels, annotations={"summary": f"alert {i}"}, value=1.0,
            active_at=at, last_active_at=at, updated_at=at, fired_at=at, resolved_at=at + 60,
        ))  # fmt: skip
    await alerts.save(raised)
    return backend


async def test_the_fleet_charts_render_with_the_sessions_and_no_console_error(
    fleet: Backend,
    base_url: str,
    tokens: dict[str, str],
    tmp_path: Path,
    failed_requests: list[str],
) -> None:
    dom = await render(
        f"{base_url}?view=usage#token={tokens['viewer']}", tmp_path / "fleet.png", failed_requests
    )

    charts = element(dom, "charts")
    assert 'hidden=""' not in charts.split(">", 1)[0]
    # 20 + 10 + 3 sessions of 22, 9 and 6 kWh
    assert "33 sessions · 548 kWh" in text(element(dom, "charts-summary"))
    for chart_id, total in (("chart-energy", "548"), ("chart-sessions", "33")):
        chart = element(dom, chart_id)
        assert attribute(chart, "data-total") == total
        assert attribute(chart, "data-points") == "30"
        assert 'class="uplot' in chart and "<canvas" in chart, chart_id
    cells = re.findall(r'<span class="hm-cell (l\d)( peak)?"[^>]*data-count="(\d+)"', dom)
    assert len(cells) == 7 * 24
    assert sum(int(n) for _, _, n in cells) == 33
    assert [level for level, peak, _ in cells if peak] == ["l5"]  # 18:00 on some day
    assert "Busiest:" in text(element(dom, "heatmap-note")) and "18:00" in text(
        element(dom, "heatmap-note")
    )
    bars = text(element(dom, "util-bars"))
    assert bars.index("CP-N1") < bars.index("CP-N2") < bars.index("CP-S1")
    uptime = element(dom, "chart-uptime")
    assert attribute(uptime, "data-series") == "north|south"
    assert "<canvas" in uptime
    assert "below 97%: south" in text(element(dom, "uptime-note"))
    firmware = text(element(dom, "fw-bars"))
    assert "Voltaro · VX-22D 2 of 3" in firmware
    alerts = element(dom, "chart-alerts")
    assert attribute(alerts, "data-total") == "3" and "<canvas" in alerts
    assert 'hidden=""' in element(dom, "site-load-card").split(">", 1)[0]  # not one site
    assert "3 raised · 1 critical" in text(element(dom, "alerts-chart-note"))


async def test_a_site_view_and_a_charger_panel_with_its_energy(
    fleet: Backend,
    base_url: str,
    tokens: dict[str, str],
    tmp_path: Path,
    failed_requests: list[str],
) -> None:
    site = await render(
        f"{base_url}?view=usage&scope=site%3Asouth&days=7#token={tokens['viewer']}",
        tmp_path / "site-south.png",
        failed_requests,
    )
    assert attribute(element(site, "chart-energy"), "data-points") == "7"
    assert "site south: 2 sessions · 12 kWh" in text(element(site, "charts-summary"))
    assert attribute(element(site, "chart-uptime"), "data-series") == "south"
    assert text(element(site, "util-bars")).startswith("CP-S1")
    load = element(site, "site-load-card")
    assert 'hidden=""' not in load.split(">", 1)[0]
    # from the start of the day 6 days ago up to now, in 15-minute steps
    assert 6 * 96 < int(attribute(element(site, "chart-site-load"), "data-points")) <= 7 * 96
    assert "<canvas" in load and "peak 11 kW" in text(element(site, "site-load-note"))

    panel = await render(f"{base_url}?charger=CP-N2#token={tokens['viewer']}",
                         tmp_path / "charger-CP-N2.png", failed_requests)  # fmt: skip
    energy = element(panel, "chart-detail-energy")
    assert attribute(energy, "data-total") == "90" and "<canvas" in energy
    assert "90 kWh in 10 sessions" in text(element(panel, "detail-energy-note"))
    assert 'hidden=""' not in element(panel, "workspace").split(">", 1)[0]


async def test_a_charger_view_shows_its_days_and_the_uptime_of_each_port(
    fleet: Backend,
    base_url: str,
    tokens: dict[str, str],
    tmp_path: Path,
    failed_requests: list[str],
) -> None:
    dom = await render(
        f"{base_url}?view=usage&scope=charger%3ACP-S1#token={tokens['viewer']}",
        tmp_path / "charger-CP-S1-usage.png",
        failed_requests,
    )
    assert "charger CP-S1: 3 sessions · 18 kWh" in text(element(dom, "charts-summary"))
    assert attribute(element(dom, "chart-sessions"), "data-total") == "3"
    uptime = element(dom, "chart-uptime")
    assert attribute(uptime, "data-series") == "CP-S1/1|CP-S1/2" and "<canvas" in uptime
    note = text(element(dom, "uptime-note"))
    assert note.startswith("per port") and "below 97%: CP-S1/1" in note
    assert text(element(dom, "util-bars")).startswith("CP-S1")
    assert "Voltaro · VX-22D 1 of 1" in text(element(dom, "fw-bars"))


async def test_no_page_makes_a_request_outside_the_platform(
    fleet: Backend, base_url: str, tokens: dict[str, str]
) -> None:
    """Every request each page makes while it loads and draws, as Chromium reports it: the
    dashboard's views with an operator (who sees the remote operations too), /docs and
    /redoc, reached by a host name as operators reach them; all of them to this API (data:
    and blob: URLs stay in the page)."""
    assert CHROMIUM is not None
    site = base_url.replace("127.0.0.1", HOST_NAME)
    signed_in = f"#token={tokens['operator']}"
    pages = [
        f"{site}{signed_in}",
        f"{site}?view=usage{signed_in}",
        f"{site}?view=usage&scope=site%3Asouth{signed_in}",
        f"{site}?view=usage&scope=charger%3ACP-N1{signed_in}",
        f"{site}?charger=CP-N1{signed_in}",
        f"{site}docs",
        f"{site}redoc",
    ]
    for page in pages:
        requests = await page_requests(CHROMIUM, page, host=HOST_NAME)
        outside = [url for url in requests if not url.startswith((site, "data:", "blob:"))]
        assert outside == [], page
        assert len(requests) > 1, (page, requests)  # the page and what it loaded
        if "#token=" in page:
            assert any("/api/v1/" in url for url in requests), (page, requests)

    # The check sees a request that leaves: a page that loads an image from elsewhere.
    elsewhere = "http://cdn.example.invalid/logo.png"
    seen = await page_requests(CHROMIUM, f"data:text/html,<img src='{elsewhere}'>", settle=1)
    assert elsewhere in seen


async def test_a_failing_chart_shows_on_its_card_and_the_checks_see_it(
    fleet: Backend, base_url: str, tokens: dict[str, str], failed_requests: list[str]
) -> None:
    """With no time-series store the uptime requests are answered 503: the uptime card says
    so, the other charts still draw, and the failed request is seen; and a page's console
    error is seen in Chromium's log, so the checks the tests above pass can fail."""
    fleet.series = None
    failed_requests.clear()
    dom, log = await chromium(f"{base_url}?view=usage#token={tokens['viewer']}", "--dump-dom")

    assert failed_requests and failed_requests[0].startswith("GET /api/v1/uptime 503")
    assert "Unavailable: no time-series store is configured" in text(element(dom, "uptime-note"))
    assert attribute(element(dom, "chart-energy"), "data-total") == "548"
    assert page_errors(log) == []

    page = "data:text/html,<script>console.error('broken');undefined.x;</script>"
    _, log = await chromium(page, "--dump-dom")
    assert len(page_errors(log)) == 2, log[-3000:]
    assert "Uncaught TypeError" in page_errors(log)[1]
