"""The FastAPI application and the server that runs it inside a ChargeTwin process.

:func:`create_app` builds the app around a ready :class:`~api.backends.Backend`, so tests
and the one-process ``chargetwin up`` decide what it talks to; :func:`run_api` serves it
with uvicorn on the caller's event loop until ``stop`` is set.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterator
from typing import Any

import uvicorn
from fastapi import APIRouter, FastAPI
from pydantic import BaseModel

from api import metrics as metrics_routes
from api.backends import Backend, open_backend
from api.diagnostics import MAX_UPLOAD_BYTES
from api.ftp_uploads import FtpUploads
from api.limits import MAX_BODY_BYTES, BodySizeLimitMiddleware
from api.metrics import HttpMetricsMiddleware
from api.problems import install_problem_handlers, problems_only
from api.routes import (
    alerts,
    audit,
    chargers,
    commands,
    credentials,
    dashboard,
    diagnostics,
    docs,
    firmware,
    health,
    id_tags,
    rules,
    shadows,
    tokens,
)
from api.routes import campaigns as campaign_routes
from api.routes import inspections as inspection_routes
from api.routes import maintenance as maintenance_routes
from api.routes import monitoring as monitoring_routes
from api.routes import profiles as profile_routes
from api.routes import sites as site_routes
from api.routes import usage as usage_routes
from api.routes.health import VERSION
from chargetwin.database import Database
from chargetwin.mqtt import MqttClient
from chargetwin.settings import Settings

log = logging.getLogger(__name__)

API_PREFIX = "/api/v1"
REF_TEMPLATE = "#/components/schemas/{model}"

DESCRIPTION = """
Operate a fleet of EV chargers through their digital twins.

* **Authentication**: every endpoint but `/health` needs `Authorization: Bearer <token>`.
  Roles are ordered: *viewer* reads, *operator* also changes desired state, *admin* also
  manages chargers and tokens. Create tokens with `chargetwin token create --role ...` or
  `POST /api/v1/tokens`; `CHARGETWIN_ADMIN_TOKEN` is accepted as an admin token.
* **Errors** are RFC 9457 problem details (`application/problem+json`); validation errors
  list each offending input in `errors[]` with a JSON pointer.
* **Desired state** changes are JSON merge patches (RFC 7396) and may be made conditional
  with `If-Match` on the shadow's `ETag`.
* Field and query parameter names are camelCase.
"""

TAGS = [
    {"name": "chargers", "description": "Registered chargers and their shadow summaries."},
    {"name": "shadows", "description": "Shadow documents and desired-state changes."},
    {"name": "commands", "description": "Remote operations on one connected charger."},
    {"name": "firmware", "description": "The firmware catalog and image downloads."},
    {"name": "diagnostics", "description": "Diagnostics uploads from chargers."},
    {"name": "id tags", "description": "The idTags chargers authorize against."},
    {
        "name": "campaigns",
        "description": "Staged firmware rollouts: canary, waves, thresholds, windows.",
    },
    {
        "name": "profiles",
        "description": "Named desired configuration for many chargers, and drift.",
    },
    {"name": "maintenance", "description": "Work orders, maintenance windows, inspections."},
    {
        "name": "sites",
        "description": "Sites: their energy limit, strategy and schedule (desired), their "
        "load, allocation and headroom (reported by the allocator).",
    },
    {
        "name": "monitoring",
        "description": "Sessions, KPIs, uptime (23 CFR 680.116) and NEVI reports.",
    },
    {
        "name": "alerts",
        "description": "Alerts raised by the rules engine; acknowledge and silence.",
    },
    {"name": "rules", "description": "Loaded rules and their state; validate a rule file."},
    {"name": "audit", "description": "Who changed what, and how it ended."},
    {"name": "tokens", "description": "API tokens and their roles (admin)."},
    {"name": "health", "description": "Liveness of the API and its dependencies."},
]


class ChargeTwinAPI(FastAPI):
    """FastAPI with an OpenAPI document that shows errors as the problems they are."""

    def openapi(self) -> dict[str, Any]:
        if self.openapi_schema is None:
            schema = super().openapi()
            _add_components(schema, firmware.OPENAPI_BODIES)
            self.openapi_schema = problems_only(schema)
        return self.openapi_schema


def _add_components(schema: dict[str, Any], models: tuple[type[BaseModel], ...]) -> None:
    """Add the models that routes read by hand (and name in ``openapi_extra``) to the
    document's components, so every ``$ref`` in it resolves."""
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    for model in models:
        body = model.model_json_schema(by_alias=True, ref_template=REF_TEMPLATE)
        components.update(body.pop("$defs", {}))
        components.setdefault(model.__name__, body)


def create_app(backend: Backend) -> FastAPI:
    """The application, serving ``backend``; its lifetime is the caller's to manage."""
    app = ChargeTwinAPI(
        title="ChargeTwin API",
        version=VERSION,
        description=DESCRIPTION,
        openapi_tags=TAGS,
        openapi_url="/openapi.json",
        docs_url=None,  # served with local assets by api.routes.docs
        redoc_url=None,
        license_info={"name": "Apache-2.0", "identifier": "Apache-2.0"},
    )
    app.state.backend = backend
    api = APIRouter(prefix=API_PREFIX)
    api_routers = [
        *(m.router for m in (chargers, credentials, shadows, audit, tokens, health)),
        *(m.router for m in (commands, firmware, diagnostics, id_tags)),
        alerts.router,
        rules.router,
        campaign_routes.router,
        profile_routes.router,
        maintenance_routes.router,
        inspection_routes.router,
        monitoring_routes.router,
        usage_routes.router,
        site_routes.router,
    ]
    for router in api_routers:
        api.include_router(router)
    app.include_router(api)
    page_routers = [dashboard.router, docs.router, metrics_routes.router]
    for router in page_routers:
        app.include_router(router)
    # Route templates for the HTTP metrics, read from the routers we include (a router's
    # routes carry its own prefix): cheap, where the OpenAPI document takes seconds.
    templates = [
        *(API_PREFIX + str(getattr(r, "path", "")) for x in api_routers for r in x.routes),
        *(str(getattr(r, "path", "")) for x in page_routers for r in x.routes),
    ]
    install_problem_handlers(app)
    app.add_middleware(
        BodySizeLimitMiddleware,
        limit=MAX_BODY_BYTES,
        routes={
            f"{API_PREFIX}/firmware": firmware.MAX_FIRMWARE_BYTES + 64 * 1024,
            f"{API_PREFIX}/diagnostics/uploads/": MAX_UPLOAD_BYTES + 64 * 1024,
        },
    )
    app.add_middleware(HttpMetricsMiddleware, templates=templates)  # outermost
    return app


class EmbeddedServer(uvicorn.Server):
    """uvicorn without its signal handlers: the ChargeTwin process owns SIGINT/SIGTERM."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


async def serve(app: FastAPI, host: str, port: int, stop: asyncio.Event) -> None:
    """Serve ``app`` until ``stop`` is set, then finish open requests and return."""
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        lifespan="off",
        log_config=None,
        access_log=False,
        server_header=False,
    )
    server = EmbeddedServer(config)
    serving = asyncio.create_task(server.serve(), name="api-uvicorn")
    stopping = asyncio.create_task(stop.wait(), name="api-stop")
    try:
        await asyncio.wait({serving, stopping}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        server.should_exit = True
        stopping.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await stopping
        await serving
    if not stop.is_set() and not server.started:
        raise OSError(f"the API could not listen on {host}:{port}")


async def run_api(
    settings: Settings,
    stop: asyncio.Event,
    *,
    db: Database | None = None,
    mqtt: MqttClient | None = None,
) -> None:
    """Serve the API on ``settings.host:settings.api_port`` until ``stop`` is set.

    ``db`` and ``mqtt``, when given, are shared with other components of the process and
    left open; otherwise the API opens its own from ``settings`` and closes them.
    """
    async with open_backend(settings, db=db, mqtt=mqtt) as backend:
        app = create_app(backend)
        ftp: FtpUploads | None = None
        if settings.ftp_port and backend.operations is not None:
            tls = None
            if settings.ftp_tls_cert is not None and settings.ftp_tls_key is not None:
                tls = (settings.ftp_tls_cert, settings.ftp_tls_key)
            ftp = FtpUploads(backend.operations.uploads, settings.host, settings.ftp_port, tls=tls)
            backend.operations.ftp_port = ftp.start()
            backend.operations.ftp_tls = tls is not None
        try:
            log.info(
                "API listening on http://%s:%s%s", settings.host, settings.api_port, API_PREFIX
            )
            await serve(app, settings.host, settings.api_port, stop)
        finally:
            if ftp is not None:
                ftp.stop()
