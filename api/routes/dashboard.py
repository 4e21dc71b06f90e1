"""The operator dashboard: static files served by the API itself, so one port serves both.

Nothing is built or fetched at run time (operators' sites may have no internet). The page
names each asset with a content hash (``app.js?v=<hash>``), so assets are cached for a year
and the page itself is revalidated on every load: an upgrade shows at the next reload. A
strict Content-Security-Policy keeps the page to its own origin, since it holds a token.
The charts are drawn by uPlot, a charting library kept as one of these assets (no CDN).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import cache
from importlib import resources

from fastapi import APIRouter, Request, Response

from api.problems import Problem

router = APIRouter(include_in_schema=False)

PACKAGE = "api.dashboard"
INDEX = "index.html"
ASSET_TYPES = {
    "app.js": "text/javascript; charset=utf-8",
    "app.css": "text/css; charset=utf-8",
    # uPlot, the charting library, vendored as published (MIT; version in its header).
    "uplot.iife.min.js": "text/javascript; charset=utf-8",
    "uplot.min.css": "text/css; charset=utf-8",
}
IMMUTABLE = "public, max-age=31536000, immutable"
REVALIDATE = "no-cache"
CONTENT_SECURITY_POLICY = "; ".join(
    (
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "connect-src 'self'",
        "base-uri 'none'",
        "form-action 'none'",
        "frame-ancestors 'none'",
    )
)
SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


@dataclass(frozen=True, slots=True)
class StaticFile:
    """A file's bytes with the hash that versions it and the media type it is served as."""

    body: bytes
    digest: str
    media_type: str

    @property
    def etag(self) -> str:
        return f'"{self.digest}"'


def _digest(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()[:16]


@cache
def asset(name: str) -> StaticFile:
    """One of the dashboard's assets, read once per process."""
    body = resources.files(PACKAGE).joinpath(name).read_bytes()
    return StaticFile(body, _digest(body), ASSET_TYPES[name])


@cache
def index() -> StaticFile:
    """The page, with every asset reference stamped with that asset's content hash."""
    html = resources.files(PACKAGE).joinpath(INDEX).read_text("utf-8")
    for name in ASSET_TYPES:
        html = html.replace(f'"dashboard/{name}"', f'"dashboard/{name}?v={asset(name).digest}"')
    body = html.encode()
    return StaticFile(body, _digest(body), "text/html; charset=utf-8")


def _not_modified(request: Request, file: StaticFile) -> bool:
    """``If-None-Match`` names this version (weak comparison, RFC 9110 section 13.1.2)."""
    header = request.headers.get("if-none-match")
    if header is None:
        return False
    tags = {tag.strip().removeprefix("W/") for tag in header.split(",")}
    return "*" in tags or file.etag in tags


def serve_static(request: Request, file: StaticFile, cache_control: str) -> Response:
    headers = {"ETag": file.etag, "Cache-Control": cache_control, **SECURITY_HEADERS}
    if _not_modified(request, file):
        return Response(status_code=304, headers=headers)
    body = b"" if request.method == "HEAD" else file.body
    response = Response(body, media_type=file.media_type, headers=headers)
    if request.method == "HEAD":
        response.headers["Content-Length"] = str(len(file.body))
    return response


@router.api_route("/", methods=["GET", "HEAD"])
async def dashboard(request: Request) -> Response:
    response = serve_static(request, index(), REVALIDATE)
    response.headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
    return response


@router.api_route("/dashboard/{name}", methods=["GET", "HEAD"])
async def dashboard_asset(name: str, request: Request) -> Response:
    if name not in ASSET_TYPES:
        raise Problem(404, f"the dashboard has no file {name!r}", kind="not-found")
    file = asset(name)
    # Only the exact version the page names may be cached for good; anything else revalidates.
    fresh = request.query_params.get("v") == file.digest
    return serve_static(request, file, IMMUTABLE if fresh else REVALIDATE)
