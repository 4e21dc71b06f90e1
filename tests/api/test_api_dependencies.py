"""Every dependency of every route runs in the event loop: FastAPI calls a plain ``def``
dependency (or endpoint) through its thread pool, a trip to another thread and back on
every request (it was two per firmware download, and one per authenticated request)."""

from __future__ import annotations

import inspect
from typing import Any

from fastapi import FastAPI
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute


def _runs_in_the_loop(call: Any) -> bool:
    if inspect.iscoroutinefunction(call):
        return True
    # An instance whose __call__ is a coroutine function (a security scheme, say).
    return not inspect.isfunction(call) and inspect.iscoroutinefunction(type(call).__call__)


def _calls(dependant: Dependant) -> list[tuple[str, Any]]:
    found = []
    for sub in dependant.dependencies:
        found.append((getattr(sub.call, "__qualname__", repr(sub.call)), sub.call))
        found += _calls(sub)
    return found


def _api_routes(routes: list[Any]) -> list[APIRoute]:
    """Every APIRoute, included routers walked (FastAPI keeps an included router whole)."""
    found = []
    for route in routes:
        if isinstance(route, APIRoute):
            found.append(route)
        elif (router := getattr(route, "original_router", None)) is not None:
            found += _api_routes(router.routes)
    return found


def test_no_route_needs_the_thread_pool(app: FastAPI) -> None:
    routes = _api_routes(app.routes)
    assert len(routes) > 50
    sync = {
        f"{sorted(route.methods)} {route.path}: {name}"
        for route in routes
        for name, call in [(route.endpoint.__qualname__, route.endpoint), *_calls(route.dependant)]
        if call is not None and not _runs_in_the_loop(call)
    }
    assert not sync, "\n".join(sorted(sync))
