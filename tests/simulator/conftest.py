"""Fixtures of the simulator tests (the helpers themselves live in simulator_helpers)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from simulator_helpers import CentralSystem, HttpServer


@pytest.fixture
async def central() -> AsyncIterator[CentralSystem]:
    cs = CentralSystem()
    await cs.start()
    yield cs
    await cs.stop()


@pytest.fixture
async def http_server() -> AsyncIterator[HttpServer]:
    server = HttpServer()
    await server.start()
    yield server
    await server.stop()
