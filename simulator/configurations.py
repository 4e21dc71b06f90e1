"""The configuration store of a simulated charger, answering like real firmware does.

OCPP 1.6 section 9 lists the standard keys; section 5.3 (ChangeConfiguration) says a
read-only key is Rejected, an unknown key NotSupported, a key that needs a reboot
RebootRequired; section 5.8 (GetConfiguration) answers the requested keys (all when none
is given) plus the list of unknown ones.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import StrEnum

from ocpp.v16.enums import ConfigurationStatus, Measurand

__all__ = ["ConfigurationStore", "KeyKind", "KeySpec"]


class KeyKind(StrEnum):
    """How a value is checked: a wrong type is Rejected, as section 5.3 allows."""

    INTEGER = "integer"
    BOOLEAN = "boolean"
    MEASURANDS = "measurands"
    CSL = "csl"
    TEXT = "text"


@dataclass(frozen=True, slots=True)
class KeySpec:
    """A key's fixed properties; the value lives in the store."""

    name: str
    kind: KeyKind
    readonly: bool = False
    reboot_required: bool = False
    maximum: int | None = None


MEASURANDS = {m.value for m in Measurand}

# OCPP 1.6 section 9.1 (Core Profile), 9.2 (Local Auth List), 9.4 (Smart Charging).
SPECS: tuple[KeySpec, ...] = (
    KeySpec("AllowOfflineTxForUnknownId", KeyKind.BOOLEAN),
    KeySpec("AuthorizationCacheEnabled", KeyKind.BOOLEAN),
    KeySpec("AuthorizeRemoteTxRequests", KeyKind.BOOLEAN),
    KeySpec("ClockAlignedDataInterval", KeyKind.INTEGER),
    KeySpec("ConnectionTimeOut", KeyKind.INTEGER),
    KeySpec("ConnectorPhaseRotation", KeyKind.CSL),
    KeySpec("GetConfigurationMaxKeys", KeyKind.INTEGER, readonly=True),
    KeySpec("HeartbeatInterval", KeyKind.INTEGER),
    KeySpec("LocalAuthorizeOffline", KeyKind.BOOLEAN),
    KeySpec("LocalPreAuthorize", KeyKind.BOOLEAN),
    KeySpec("MeterValuesAlignedData", KeyKind.MEASURANDS),
    KeySpec("MeterValuesSampledData", KeyKind.MEASURANDS),
    KeySpec("MeterValueSampleInterval", KeyKind.INTEGER),
    KeySpec("NumberOfConnectors", KeyKind.INTEGER, readonly=True),
    KeySpec("ResetRetries", KeyKind.INTEGER),
    KeySpec("StopTransactionOnEVSideDisconnect", KeyKind.BOOLEAN),
    KeySpec("StopTransactionOnInvalidId", KeyKind.BOOLEAN),
    KeySpec("StopTxnAlignedData", KeyKind.MEASURANDS),
    KeySpec("StopTxnSampledData", KeyKind.MEASURANDS),
    KeySpec("SupportedFeatureProfiles", KeyKind.CSL, readonly=True),
    KeySpec("TransactionMessageAttempts", KeyKind.INTEGER),
    KeySpec("TransactionMessageRetryInterval", KeyKind.INTEGER),
    KeySpec("UnlockConnectorOnEVSideDisconnect", KeyKind.BOOLEAN),
    KeySpec("WebSocketPingInterval", KeyKind.INTEGER, reboot_required=True),
    KeySpec("LocalAuthListEnabled", KeyKind.BOOLEAN),
    KeySpec("LocalAuthListMaxLength", KeyKind.INTEGER, readonly=True),
    KeySpec("SendLocalListMaxLength", KeyKind.INTEGER, readonly=True),
    KeySpec("ChargeProfileMaxStackLevel", KeyKind.INTEGER, readonly=True),
    KeySpec("MaxChargingProfilesInstalled", KeyKind.INTEGER, readonly=True),
)
SPEC_BY_NAME: dict[str, KeySpec] = {spec.name: spec for spec in SPECS}

SAMPLED_DATA = ",".join(
    (
        Measurand.energy_active_import_register,
        Measurand.power_active_import,
        Measurand.current_import,
        Measurand.voltage,
        Measurand.temperature,
        Measurand.soc,
    )
)


def default_values(connectors: int, heartbeat_s: int, meter_interval_s: int) -> dict[str, str]:
    """Factory values of a charger with ``connectors`` connectors."""
    return {
        "AllowOfflineTxForUnknownId": "false",
        "AuthorizationCacheEnabled": "true",
        "AuthorizeRemoteTxRequests": "true",
        "ClockAlignedDataInterval": "0",
        "ConnectionTimeOut": "60",
        "ConnectorPhaseRotation": ",".join(f"{c}.RST" for c in range(connectors + 1)),
        "GetConfigurationMaxKeys": "50",
        "HeartbeatInterval": str(heartbeat_s),
        "LocalAuthorizeOffline": "true",
        "LocalPreAuthorize": "false",
        "MeterValuesAlignedData": Measurand.energy_active_import_register.value,
        "MeterValuesSampledData": SAMPLED_DATA,
        "MeterValueSampleInterval": str(meter_interval_s),
        "NumberOfConnectors": str(connectors),
        "ResetRetries": "3",
        "StopTransactionOnEVSideDisconnect": "true",
        "StopTransactionOnInvalidId": "true",
        "StopTxnAlignedData": "",
        "StopTxnSampledData": Measurand.energy_active_import_register.value,
        "SupportedFeatureProfiles": "Core,FirmwareManagement,RemoteTrigger,LocalAuthListManagement",
        "TransactionMessageAttempts": "3",
        "TransactionMessageRetryInterval": "60",
        "UnlockConnectorOnEVSideDisconnect": "true",
        "WebSocketPingInterval": "60",
        "LocalAuthListEnabled": "false",
        "LocalAuthListMaxLength": "100",
        "SendLocalListMaxLength": "100",
        "ChargeProfileMaxStackLevel": "8",
        "MaxChargingProfilesInstalled": "8",
    }


def _valid(spec: KeySpec, value: str) -> bool:
    if spec.kind is KeyKind.INTEGER:
        try:
            number = int(value.strip())
        except ValueError:
            return False
        return number >= 0 and (spec.maximum is None or number <= spec.maximum)
    if spec.kind is KeyKind.BOOLEAN:
        return value.strip().lower() in ("true", "false")
    if spec.kind is KeyKind.MEASURANDS:
        items = [item.strip() for item in value.split(",") if item.strip()]
        return all(item in MEASURANDS for item in items)
    return len(value) <= 500  # CiString500, section 5.3


class ConfigurationStore:
    """Values of one charger's keys; the specs are shared by every charger.

    Only values that differ from the factory defaults would need storing, but a dict of
    ~30 short strings is small next to a websocket, so clarity wins.
    """

    __slots__ = ("_listeners", "_values")

    def __init__(self, values: dict[str, str]) -> None:
        self._values = values
        self._listeners: list[Callable[[str], None]] = []

    def on_change(self, listener: Callable[[str], None]) -> None:
        """Call ``listener(key)`` after an accepted change, so intervals take effect."""
        self._listeners.append(listener)

    def get(self, key: str) -> str:
        return self._values[key]

    def integer(self, key: str) -> int:
        return int(self._values[key].strip())

    def boolean(self, key: str) -> bool:
        return self._values[key].strip().lower() == "true"

    def items(self, key: str) -> list[str]:
        """The items of a comma-separated list key."""
        return [item.strip() for item in self._values[key].split(",") if item.strip()]

    def set(self, key: str, value: str) -> None:
        """Set a value from inside the charger (boot interval, tests); no checks."""
        self._values[key] = value
        for listener in self._listeners:
            listener(key)

    def read(self, keys: Iterable[str] | None) -> tuple[list[dict[str, str | bool]], list[str]]:
        """Answer GetConfiguration.req (section 5.8): known entries and unknown keys."""
        wanted = list(keys) if keys else list(self._values)
        known: list[dict[str, str | bool]] = []
        unknown: list[str] = []
        for key in wanted:
            spec = SPEC_BY_NAME.get(key)
            if spec is None or key not in self._values:
                unknown.append(key)
                continue
            known.append({"key": key, "readonly": spec.readonly, "value": self._values[key]})
        return known, unknown

    def change(self, key: str, value: str) -> ConfigurationStatus:
        """Answer ChangeConfiguration.req (section 5.3) and apply an accepted value."""
        spec = SPEC_BY_NAME.get(key)
        if spec is None or key not in self._values:
            return ConfigurationStatus.not_supported
        if spec.readonly or not _valid(spec, value):
            return ConfigurationStatus.rejected
        if spec.kind is KeyKind.INTEGER:
            value = str(int(value.strip()))
        elif spec.kind is KeyKind.BOOLEAN:
            value = value.strip().lower()
        self.set(key, value)
        if spec.reboot_required:
            return ConfigurationStatus.reboot_required
        return ConfigurationStatus.accepted


AUTHORIZATION_KEY = "AuthorizationKey"
"""OCPP 1.6 security whitepaper: the HTTP Basic password, write-only (never in
GetConfiguration, so it is not in :data:`SPECS`), "minimal 16 bytes ... hexadecimal
represented (20 bytes maximum, a string of up to 40 hexadecimal digits)"."""


def authorization_key_password(value: str) -> str | None:
    """The password an AuthorizationKey value stands for (its hex digits decoded), or None
    when the value is not 16-20 bytes in hex, or its bytes are not a printable password
    (this charger presents its password as text in HTTP Basic auth)."""
    if not 32 <= len(value) <= 40 or len(value) % 2:
        return None
    try:
        password = bytes.fromhex(value).decode()
    except ValueError:  # not hex, or not UTF-8
        return None
    return password if password.isprintable() and ":" not in password else None
