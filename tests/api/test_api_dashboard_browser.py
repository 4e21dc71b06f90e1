"""The dashboard in a real browser: Debian's headless Chromium against the API on a socket.

Chromium's ``--dump-dom`` prints the page after its scripts ran (``--virtual-time-budget``
lets the polling settle), so these tests see what an operator would see, with the real
twin answering. Skipped where no Chromium is installed; nothing is downloaded.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import shutil
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable
from html import unescape
from pathlib import Path
from typing import Any

import pytest
from api_helpers import free_port
from fastapi import FastAPI

from api.app import serve
from api.backends import Backend
from twin.service import ShadowService

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
BROWSER_TIMEOUT = 120.0  # Swagger UI renders ~100 operations; slow on a loaded machine

pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed")


@pytest.fixture
def database_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path}/chargetwin.db"


@pytest.fixture
async def base_url(app: FastAPI, twin: ShadowService) -> AsyncIterator[str]:
    port = free_port()
    stop = asyncio.Event()
    server = asyncio.create_task(serve(app, "127.0.0.1", port, stop), name="test-dashboard-api")
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


async def dump_dom(url: str) -> str:
    """The page's DOM after its scripts ran, as headless Chromium sees it."""
    assert CHROMIUM is not None
    with tempfile.TemporaryDirectory() as profile:
        process = await asyncio.create_subprocess_exec(
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={profile}",
            "--window-size=1400,900",
            "--virtual-time-budget=6000",
            "--dump-dom",
            url,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,
        )
        try:
            out, _ = await asyncio.wait_for(process.communicate(), BROWSER_TIMEOUT)
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()
    return out.decode()


def element(dom: str, element_id: str) -> str:
    """The opening tag and text of the element with ``element_id`` (flat, tags stripped)."""
    match = re.search(rf'<(\w+)[^>]*\bid="{element_id}"[^>]*>(.*?)</\1>', dom, re.S)
    assert match, f"no #{element_id} in the page"
    return unescape(re.sub(r"<[^>]+>", " ", match.group(0)))


def is_hidden(dom: str, element_id: str) -> bool:
    tag = re.search(rf'<\w+[^>]*\bid="{element_id}"[^>]*>', dom)
    assert tag, f"no #{element_id} in the page"
    return re.search(r"\shidden(=\"\")?[\s>]", tag.group(0)) is not None


def words(text: str) -> str:
    return " ".join(text.split())


Report = Callable[[str, dict[str, Any]], Awaitable[None]]


@pytest.fixture
def report(backend: Backend) -> Report:
    async def _report(charger_id: str, reported: dict[str, Any]) -> None:
        await backend.shadow_client.update(charger_id, {"reported": reported})

    return _report


async def test_a_token_in_the_fragment_signs_in_and_the_fleet_shows(
    base_url: str,
    register: Callable[..., Awaitable[dict[str, Any]]],
    report: Report,
    tokens: dict[str, str],
) -> None:
    await register("CP-ONLINE", site="depot-north")
    await register("CP-NEVER")
    await report(
        "CP-ONLINE",
        {
            "connection": {"online": True, "since": 1.7e9, "ocppVersion": "1.6"},
            "chargePoint": {"vendor": "Voltaro", "model": "VX-22D"},
            "firmware": {"version": "3.1.0"},
            "connectors": {"1": {"status": "Charging"}, "2": {"status": "Faulted"}},
        },
    )

    dom = await dump_dom(f"{base_url}#token={tokens['viewer']}")

    assert is_hidden(dom, "signin")
    assert not is_hidden(dom, "app")
    assert words(element(dom, "kpi-total")) == "2"
    assert words(element(dom, "kpi-online")) == "1"
    assert words(element(dom, "kpi-offline")) == "1"
    rows = words(element(dom, "fleet-rows"))
    assert "Online CP-ONLINE depot-north Voltaro · VX-22D 3.1.0" in rows
    assert "1 Charging 2 Faulted" in rows
    assert "Offline CP-NEVER" in rows
    assert "Faulted 1" in words(element(dom, "status-legend"))
    assert "Updated" in element(dom, "freshness-text")
    assert is_hidden(dom, "banner-error")


async def test_connectors_of_offline_chargers_are_not_counted_by_status(
    base_url: str,
    register: Callable[..., Awaitable[dict[str, Any]]],
    report: Report,
    tokens: dict[str, str],
) -> None:
    await register("CP-LIVE")
    await register("CP-GONE")
    await report(
        "CP-LIVE",
        {
            "connection": {"online": True, "since": 1.7e9},
            "connectors": {"1": {"status": "Charging"}},
        },
    )
    await report(
        "CP-GONE",
        {
            "connection": {"online": False, "since": 1.7e9},
            "connectors": {"1": {"status": "Faulted"}, "2": {"status": "Charging"}},
        },
    )

    dom = await dump_dom(f"{base_url}#token={tokens['viewer']}")

    legend = words(element(dom, "status-legend"))
    assert "Charging 1" in legend  # CP-GONE's Charging connector is not counted
    assert "Faulted 0" in legend
    assert words(element(dom, "kpi-connectors-sub")) == "2 of offline chargers not counted"


async def test_an_unknown_token_is_sent_back_to_sign_in(base_url: str) -> None:
    dom = await dump_dom(f"{base_url}#token=ct_not-a-real-token")

    assert not is_hidden(dom, "signin")
    assert is_hidden(dom, "app")
    assert "unknown or revoked" in element(dom, "signin-error")


async def test_the_detail_panel_shows_pending_and_refused_desired_values(
    base_url: str,
    register: Callable[..., Awaitable[dict[str, Any]]],
    report: Report,
    backend: Backend,
    tokens: dict[str, str],
) -> None:
    await register("CP-7")
    await report(
        "CP-7",
        {
            "connection": {"online": True, "since": 1.7e9, "ocppVersion": "1.6"},
            "config": {"HeartbeatInterval": "60"},
            "connectors": {"0": {"status": "Available"}, "1": {"status": "Available"}},
            "refused": {
                "config": {
                    "TurboMode": {"value": "on", "status": "NotSupported", "at": 1.7e9},
                }
            },
        },
    )
    await backend.shadow_client.update(
        "CP-7", {"desired": {"config": {"HeartbeatInterval": "300", "TurboMode": "on"}}}
    )

    dom = await dump_dom(f"{base_url}?charger=CP-7#token={tokens['operator']}")

    assert words(element(dom, "detail-title")) == "CP-7"
    config = words(element(dom, "cfg-rows"))
    assert "HeartbeatInterval Pending 60 300" in config
    assert 'TurboMode Refused: "on" NotSupported' in config
    assert re.search(r'<tr[^>]*class="refused"[^>]*data-key="TurboMode"', dom) or re.search(
        r'<tr[^>]*data-key="TurboMode"[^>]*class="refused"', dom
    )
    assert "1 pending · 1 refused" in element(dom, "cfg-summary")
    # The remote operations an operator reaches for, for an online charger: shown, enabled,
    # with the connector choices of its connectors.
    assert not is_hidden(dom, "commands")
    commands = re.search(r'<section[^>]*id="commands".*?</section>', dom, re.S)
    assert commands
    for label in ("Soft reset", "Get diagnostics", "Read schedule", "Clear profiles",
                  "Cancel reservation", "Local list version", "Clear cache"):  # fmt: skip
        button = re.search(rf"<button[^>]*>{label}</button>", commands.group(0))
        assert button and "disabled" not in button.group(0), label
    assert "Connector 1" in element(dom, "cmd-schedule-connector")


@pytest.mark.parametrize(
    ("path", "rendered"),
    [("docs", r'class="opblock opblock-'), ("redoc", r'data-section-id="tag/chargers"')],
)
async def test_the_api_documentation_renders_with_no_internet(
    base_url: str, path: str, rendered: str
) -> None:
    """Swagger UI and ReDoc come from this process: with no CDN they still show every
    operation (a page loading its script from outside stays blank here)."""
    dom = await dump_dom(f"{base_url}{path}")

    assert re.search(rendered, dom), dom[:2000]
    assert "ChargeTwin API" in dom


async def test_the_remote_operations_of_a_2_0_1_station_speak_its_version(
    base_url: str,
    register: Callable[..., Awaitable[dict[str, Any]]],
    report: Report,
    tokens: dict[str, str],
) -> None:
    await register("CS-201")
    await report(
        "CS-201",
        {
            "connection": {"online": True, "since": 1.7e9, "ocppVersion": "2.0.1"},
            "connectors": {"0": {"status": "Available"}, "1": {"status": "Available"}},
        },
    )
    dom = await dump_dom(f"{base_url}?charger=CS-201#token={tokens['operator']}")
    commands = re.search(r'<section[^>]*id="commands".*?</section>', dom, re.S)
    assert commands and not is_hidden(dom, "commands")
    # 2.0.1 resets are OnIdle or Immediate; its log upload reports LogStatusNotification.
    for label in ("Reset when idle", "Immediate reset"):
        button = re.search(rf"<button[^>]*>{label}</button>", commands.group(0))
        assert button and "disabled" not in button.group(0), label
    assert "Soft reset" not in commands.group(0)
    trigger = words(element(dom, "cmd-trigger-message"))
    assert "LogStatusNotification" in trigger and "DiagnosticsStatusNotification" not in trigger
