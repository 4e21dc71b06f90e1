"""Liveness for load balancers and ``docker compose``: no token needed, 503 when degraded."""

from __future__ import annotations

import asyncio
import importlib.metadata
import logging
from typing import Annotated

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse

from api.backends import Backend, get_backend
from api.models import HealthOut

log = logging.getLogger(__name__)

router = APIRouter(tags=["health"])

DATABASE_TIMEOUT = 2.0


def _installed_version() -> str:
    # From the distribution, not ``chargetwin.__version__``: under pytest the folder
    # ``tests/chargetwin`` can turn ``chargetwin`` into a namespace package without it.
    try:
        return importlib.metadata.version("chargetwin")
    except importlib.metadata.PackageNotFoundError:
        return "0+unknown"


VERSION = _installed_version()


async def database_reachable(backend: Backend) -> bool:
    try:
        await asyncio.wait_for(backend.db.fetchone("SELECT 1"), DATABASE_TIMEOUT)
    except Exception as exc:  # any failure means "not reachable"; the reason is logged
        log.warning("health check: database unreachable: %s", exc)
        return False
    return True


@router.get(
    "/health",
    response_model=HealthOut,
    summary="Health of the API and its dependencies",
    description="No authentication. 200 when MQTT is connected and the database answers, "
    "503 otherwise (same body).",
    responses={503: {"model": HealthOut, "description": "A dependency is down."}},
)
async def health(backend: Annotated[Backend, Depends(get_backend)]) -> JSONResponse:
    mqtt_ok = backend.mqtt.is_connected
    database_ok = await database_reachable(backend)
    body = HealthOut(
        status="ok" if mqtt_ok and database_ok else "degraded",
        mqtt=mqtt_ok,
        database=database_ok,
        version=VERSION,
    )
    status_code = 200 if body.status == "ok" else 503
    return JSONResponse(body.model_dump(by_alias=True), status_code=status_code)
