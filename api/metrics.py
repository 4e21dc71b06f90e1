"""HTTP metrics of the API (requests by route template and status) and ``GET /metrics``.

The route label is the route's template (``/api/v1/chargers/{charger_id}``), never the
raw path, so a scan of random URLs adds no series; requests that match no route count as
``unmatched``. Templates come from the routers the application includes, prefixed as it
includes them (:func:`api.app.create_app`); not from the matched route in the request
scope, whose path is relative to its router in current FastAPI versions.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.auth import Viewer
from api.problems import problem_responses
from chargetwin.metrics import HTTP_REQUESTS, HTTP_SECONDS

router = APIRouter(tags=["health"])


def _pattern(template: str) -> re.Pattern[str]:
    parts = re.split(r"(\{[^}]+\})", template)
    return re.compile("".join("[^/]+" if p.startswith("{") else re.escape(p) for p in parts) + "/?")


class HttpMetricsMiddleware:
    """Counts every answered request and times it, by route template."""

    def __init__(self, app: ASGIApp, templates: Iterable[str]) -> None:
        self.app = app
        # Literal templates first, so a fixed path wins over a parameter in its place.
        ordered = sorted(set(templates), key=lambda t: (t.count("{"), -len(t)))
        self._patterns = [(_pattern(t), t) for t in ordered if t]

    def route_of(self, path: str) -> str:
        for pattern, template in self._patterns:
            if pattern.fullmatch(path):
                return template
        return "unmatched"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # what the server answers when the app fails before a response

        async def recording_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, recording_send)
        finally:
            template = self.route_of(str(scope.get("path", "")))
            HTTP_REQUESTS.labels(template, str(scope.get("method", "")), str(status)).inc()
            HTTP_SECONDS.labels(template).observe(time.perf_counter() - started)


@router.get(
    "/metrics",
    # Outside the document like the dashboard: /api/v1 is the operators' API; this is the
    # path Prometheus scrapes by default (docs/operations.md, Metrics).
    include_in_schema=False,
    summary="Prometheus metrics of this process",
    description="Viewer. The Prometheus text format (`text/plain; version=0.0.4`): OCPP "
    "calls and errors, connected chargers, shadow updates, the MQTT outbox, recorder "
    "points, spool, rules, campaigns and HTTP requests of the components running in this "
    "process (docs/operations.md, Metrics). Scrape with a viewer token (Prometheus "
    "`authorization: {credentials: ...}`).",
    response_class=Response,
    responses={
        200: {"content": {"text/plain": {"schema": {"type": "string"}}}},
        **problem_responses(401, 403),
    },
)
async def metrics(_: Viewer) -> Response:
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
