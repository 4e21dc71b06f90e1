"""The API's documentation pages, Swagger UI at ``/docs`` and ReDoc at ``/redoc``, served
with their scripts and styles from this process.

Why not FastAPI's default pages: they load Swagger UI from a CDN, so on a site without
internet ``/docs`` is a blank page. The assets come from the ``fastapi-offline`` package,
which ships Swagger UI and ReDoc builds (OpenAPI 3.1 capable) as plain files; we serve them
the way the dashboard serves its own (:mod:`api.routes.dashboard`): content-hashed and
cached for good.
"""

from __future__ import annotations

import hashlib
from functools import cache
from importlib import resources

from fastapi import APIRouter, Request, Response
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html

from api.problems import Problem
from api.routes.dashboard import IMMUTABLE, REVALIDATE, StaticFile, serve_static

router = APIRouter(include_in_schema=False)

PACKAGE = "fastapi_offline"
ASSETS = {
    "swagger-ui-bundle.js": "text/javascript; charset=utf-8",
    "swagger-ui.css": "text/css; charset=utf-8",
    "redoc.standalone.js": "text/javascript; charset=utf-8",
    "favicon.png": "image/png",
}
TITLE = "ChargeTwin API"
# ReDoc's side menu shows Redocly's logo from Redocly's CDN, whatever its options say: the
# bundle served here shows our favicon there instead, so the page asks nothing of outside.
REDOC_CDN_LOGO = b"https://cdn.redoc.ly/redoc/logo-mini.svg"


@cache
def asset(name: str) -> StaticFile:
    body = resources.files(PACKAGE).joinpath("static", name).read_bytes()
    if name == "redoc.standalone.js":
        body = body.replace(REDOC_CDN_LOGO, _url("favicon.png").encode())
    return StaticFile(body, hashlib.sha256(body).hexdigest()[:16], ASSETS[name])


def _url(name: str) -> str:
    return f"/docs/assets/{name}?v={asset(name).digest}"


@router.get("/docs")
async def swagger_ui() -> Response:
    return get_swagger_ui_html(
        openapi_url="/openapi.json",
        title=f"{TITLE} (Swagger UI)",
        swagger_js_url=_url("swagger-ui-bundle.js"),
        swagger_css_url=_url("swagger-ui.css"),
        swagger_favicon_url=_url("favicon.png"),
    )


@router.get("/redoc")
async def redoc() -> Response:
    return get_redoc_html(
        openapi_url="/openapi.json",
        title=f"{TITLE} (ReDoc)",
        redoc_js_url=_url("redoc.standalone.js"),
        redoc_favicon_url=_url("favicon.png"),
        with_google_fonts=False,
    )


@router.api_route("/docs/assets/{name}", methods=["GET", "HEAD"])
async def docs_asset(name: str, request: Request) -> Response:
    if name not in ASSETS:
        raise Problem(404, f"the documentation has no file {name!r}", kind="not-found")
    file = asset(name)
    fresh = request.query_params.get("v") == file.digest
    return serve_static(request, file, IMMUTABLE if fresh else REVALIDATE)
