"""The operator dashboard as the API serves it: the page, its assets, their caching.

The dashboard never touches the database, so these tests run on SQLite only (the shared
``database_url`` fixture is narrowed below); the browser test is in
``test_api_dashboard_browser.py``.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from html.parser import HTMLParser
from importlib import resources
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import httpx
import pytest
from api_helpers import assert_problem

from api.routes.dashboard import ASSET_TYPES, asset

DASHBOARD = resources.files("api.dashboard")
# An XML namespace name inside the inline SVG icon: an identifier, never fetched.
NAMESPACES = {"http://www.w3.org/2000/svg"}
# The charting library's license header names its home page; nothing loads it.
VENDORED_HOME = {"https://github.com/leeoniya/uPlot"}


@pytest.fixture
def database_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path}/chargetwin.db"


class _References(HTMLParser):
    """Every URL the page would load: src and href attributes."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []
        self.ids: set[str] = set()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            if name in ("src", "href") and value is not None:
                self.urls.append(value)
            if name == "id" and value is not None:
                self.ids.add(value)


def parse(html: str) -> _References:
    parser = _References()
    parser.feed(html)
    return parser


async def test_root_serves_the_page_with_revalidation_and_a_strict_policy(
    client: httpx.AsyncClient,
) -> None:
    response = await client.get("/")
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    assert response.headers["cache-control"] == "no-cache"
    assert re.fullmatch(r'"[0-9a-f]{16}"', response.headers["etag"])
    policy = response.headers["content-security-policy"]
    assert "default-src 'none'" in policy
    assert "script-src 'self'" in policy and "connect-src 'self'" in policy
    assert response.headers["x-content-type-options"] == "nosniff"
    assert "<title>ChargeTwin" in response.text

    again = await client.get("/", headers={"If-None-Match": response.headers["etag"]})
    assert again.status_code == 304
    assert again.content == b""
    assert again.headers["etag"] == response.headers["etag"]


async def test_the_page_references_only_its_own_assets_and_no_external_url(
    client: httpx.AsyncClient,
) -> None:
    page = await client.get("/")
    references = parse(page.text)
    local = [u for u in references.urls if not u.startswith(("data:", "#"))]
    assert sorted(urlsplit(u).path for u in local) == [
        "dashboard/app.css", "dashboard/app.js", "dashboard/uplot.iife.min.js",
        "dashboard/uplot.min.css",
    ]  # fmt: skip
    for url in local:
        parts = urlsplit(url)
        assert not parts.scheme and not parts.netloc, url
        # Relative, so the dashboard also works behind a reverse proxy under a prefix.
        assert not url.startswith("/"), url
        served = await client.get(urljoin("http://testserver/", url))
        assert served.status_code == 200, url
    for name in ("index.html", *ASSET_TYPES):
        text = DASHBOARD.joinpath(name).read_text("utf-8")
        external = set(re.findall(r"(?:https?:)?//[\w.-]+\.[a-z]{2,}[^\s\"'<>)]*", text))
        allowed = NAMESPACES | (VENDORED_HOME if name.startswith("uplot.") else set())
        assert external <= allowed, (name, external)
        assert "@import" not in text and "import(" not in text, name


async def test_assets_have_their_types_and_are_immutable_only_at_their_version(
    client: httpx.AsyncClient,
) -> None:
    page = (await client.get("/")).text
    for name, media_type in ASSET_TYPES.items():
        digest = asset(name).digest
        assert f'"dashboard/{name}?v={digest}"' in page

        versioned = await client.get(f"/dashboard/{name}?v={digest}")
        assert versioned.status_code == 200
        assert versioned.headers["content-type"] == media_type
        assert versioned.headers["cache-control"] == "public, max-age=31536000, immutable"
        assert versioned.content == DASHBOARD.joinpath(name).read_bytes()

        unversioned = await client.get(f"/dashboard/{name}")
        assert unversioned.headers["cache-control"] == "no-cache"
        stale = await client.get(f"/dashboard/{name}?v=0000000000000000")
        assert stale.headers["cache-control"] == "no-cache"

        etag = versioned.headers["etag"]
        for header in (etag, f"W/{etag}", f'"other", {etag}'):
            cached = await client.get(f"/dashboard/{name}", headers={"If-None-Match": header})
            assert cached.status_code == 304, header
        changed = await client.get(f"/dashboard/{name}", headers={"If-None-Match": '"other"'})
        assert changed.status_code == 200


async def test_head_answers_headers_without_a_body(client: httpx.AsyncClient) -> None:
    full = await client.get("/dashboard/app.js")
    head = await client.head("/dashboard/app.js")
    assert head.status_code == 200
    assert head.content == b""
    assert head.headers["content-length"] == str(len(full.content))
    assert head.headers["etag"] == full.headers["etag"]


@pytest.mark.parametrize(
    "path", ["/dashboard/index.html", "/dashboard/__init__.py", "/dashboard/..%2Fapp.py"]
)
async def test_only_the_dashboard_assets_are_served(client: httpx.AsyncClient, path: str) -> None:
    assert_problem(await client.get(path), 404)


async def test_dashboard_routes_are_not_in_the_openapi_schema(client: httpx.AsyncClient) -> None:
    schema = (await client.get("/openapi.json")).json()
    paths = set(schema["paths"])
    assert paths and all(p.startswith("/api/v1/") for p in paths), paths


def test_every_element_the_script_looks_up_exists_in_the_page() -> None:
    html = DASHBOARD.joinpath("index.html").read_text("utf-8")
    script = DASHBOARD.joinpath("app.js").read_text("utf-8")
    looked_up = set(re.findall(r'\$\("([\w-]+)"\)', script))
    assert len(looked_up) > 30
    assert looked_up - parse(html).ids == set()


@pytest.mark.parametrize("name", ["app.js", "uplot.iife.min.js"])
def test_the_scripts_are_valid_javascript(name: str) -> None:
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed")
    path = DASHBOARD.joinpath(name)
    with resources.as_file(path) as file:
        result = subprocess.run(
            [node, "--check", str(file)], capture_output=True, text=True, timeout=30, check=False
        )
    assert result.returncode == 0, result.stderr


def test_the_charting_library_is_the_pinned_release_with_its_license() -> None:
    """uPlot 1.6.32 as published (MIT): the license travels with it, and the page loads it
    before its own module, which draws with the global it defines."""
    for name in ("uplot.iife.min.js", "uplot.min.css"):
        text = DASHBOARD.joinpath(name).read_text("utf-8")
        assert text.startswith("/*! uPlot 1.6.32 "), name
        assert "The MIT License (MIT)" in text and "Copyright (c) 2022 Leon Sorokin" in text
    script = DASHBOARD.joinpath("uplot.iife.min.js").read_text("utf-8")
    assert "/*! https://github.com/leeoniya/uPlot (v1.6.32) */\nvar uPlot=" in script
    html = DASHBOARD.joinpath("index.html").read_text("utf-8")
    assert html.index('<script defer src="dashboard/uplot.iife.min.js">') < html.index(
        '<script type="module" src="dashboard/app.js">'
    )


def test_the_page_has_no_autofocus_attribute() -> None:
    """Chromium processes ``autofocus`` at load, even inside the closed confirm dialog, and
    logs "Autofocus processing was blocked ..." when the charger panel has taken focus;
    the dialog focuses its Cancel button from the script instead."""
    html = DASHBOARD.joinpath("index.html").read_text("utf-8")
    assert "autofocus" not in html
    script = DASHBOARD.joinpath("app.js").read_text("utf-8")
    assert "dialog.querySelector('button[value=\"cancel\"]').focus()" in script
