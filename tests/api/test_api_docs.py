"""The documentation pages name only assets this API serves, and serves them."""

from __future__ import annotations

import re

import httpx
import pytest


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
async def test_documentation_pages_load_nothing_from_outside(
    client: httpx.AsyncClient, page: str
) -> None:
    response = await client.get(page)

    assert response.status_code == 200
    sources = re.findall(r'(?:src|href)="([^"]+)"', response.text)
    sources += re.findall(r"url: '([^']+)'", response.text)
    assert sources, response.text
    for source in sources:
        assert source.startswith("/"), f"{page} loads {source} from outside the platform"
    assert not re.search(r"https?://", response.text), "an absolute URL in the page"
    for asset in [s for s in sources if s.startswith("/docs/assets/")]:
        served = await client.get(asset)
        assert served.status_code == 200, asset
        assert "immutable" in served.headers["cache-control"]


async def test_redoc_shows_its_logo_from_this_api(client: httpx.AsyncClient) -> None:
    """ReDoc's bundle loads Redocly's logo from a CDN at run time (no option hides it)."""
    page = (await client.get("/redoc")).text
    bundle = await client.get(re.findall(r'src="([^"]*redoc[^"]*)"', page)[0])

    assert bundle.status_code == 200
    assert b"cdn.redoc.ly" not in bundle.content
    favicon = re.findall(rb'src:"(/docs/assets/favicon\.png[^"]*)"', bundle.content)
    assert favicon, "the logo points at nothing"
    assert (await client.get(favicon[0].decode())).headers["content-type"] == "image/png"


async def test_an_unknown_documentation_asset_is_a_problem(client: httpx.AsyncClient) -> None:
    response = await client.get("/docs/assets/app.js")

    assert response.status_code == 404
    assert response.headers["content-type"] == "application/problem+json"
