"""TLS for the OCPP endpoint: OCPP 1.6 security profiles 2 and 3.

The OCPP 1.6 security whitepaper (edition 2) defines three profiles:

1. Basic auth over plain websockets (``ws://``);
2. Basic auth over TLS (``wss://``), the server authenticated by its certificate;
3. TLS with client certificates: the charger is authenticated by its certificate, signed
   by a CA the operator trusts, whose subject common name is the charge point identity
   (the serial number the charger connects with).

Both TLS profiles require TLS 1.2 or newer; we never negotiate lower. Profile 3 asks the
TLS layer to require and verify the client certificate against the operator's charger CA,
so an unsigned or foreign certificate never reaches HTTP; the upgrade then compares the CN
with the id in the URL.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bridge.errors import BridgeError


class TlsConfigurationError(BridgeError):
    """The certificate, key or CA files cannot be loaded."""


@dataclass(frozen=True, slots=True)
class TlsFiles:
    """PEM paths: the server certificate and key, and the CA of charger certificates."""

    cert: Path
    key: Path
    client_ca: Path | None = None

    @property
    def profile(self) -> int:
        """The OCPP security profile these files give: 2 (server TLS) or 3 (mutual TLS)."""
        return 3 if self.client_ca is not None else 2


def server_context(files: TlsFiles) -> ssl.SSLContext:
    """An SSL context for the OCPP server: TLS >= 1.2, client certificates for profile 3."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(certfile=files.cert, keyfile=files.key)
    except (OSError, ssl.SSLError) as exc:
        raise TlsConfigurationError(
            f"cannot load the OCPP server certificate {files.cert} / key {files.key}: {exc}"
        ) from exc
    if files.client_ca is not None:
        try:
            context.load_verify_locations(cafile=files.client_ca)
        except (OSError, ssl.SSLError) as exc:
            raise TlsConfigurationError(
                f"cannot load the charger CA {files.client_ca}: {exc}"
            ) from exc
        context.verify_mode = ssl.CERT_REQUIRED
    return context


def common_name(peercert: Any) -> str | None:
    """The subject CN of a certificate as ``SSLSocket.getpeercert()`` returns it."""
    if not isinstance(peercert, dict):
        return None
    for rdn in peercert.get("subject", ()):
        for key, value in rdn:
            if key == "commonName":
                return str(value)
    return None
