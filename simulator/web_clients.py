"""The HTTP client a simulated charger downloads firmware and uploads diagnostics with.

Each transfer gets a client (and connection) of its own, as each real charger has, but all
of them share one TLS context: building one loads a whole CA bundle, which measured
55% of the simulator's CPU during a 2,000-charger firmware campaign when every download
built its own (for plain http locations too), and slowed the simulated fleet enough to set
the campaign's pace.
"""

from __future__ import annotations

import functools
import ssl

import httpx

__all__ = ["web_client"]

TIMEOUT_S = 30.0


@functools.cache
def _tls_context() -> ssl.SSLContext:
    """httpx's own default (its CA bundle, or ``SSL_CERT_FILE``), built once per process."""
    return httpx.create_ssl_context()


def web_client() -> httpx.AsyncClient:
    """A fresh client for one transfer, verifying https servers as httpx does by default."""
    return httpx.AsyncClient(timeout=TIMEOUT_S, verify=_tls_context())
