"""What the bridge publishes: shadow reports, telemetry, events, presence, bridge status.

Every topic and payload here is documented in ``bridge/README.md``; change both together.
All messages are QoS 1 through the MQTT client's outbox (:mod:`chargetwin.outbox`);
presence and bridge status are retained so a late subscriber sees the current state.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from bridge.times import now
from chargetwin.mqtt import MqttClient
from chargetwin.topics import Topics

log = logging.getLogger(__name__)

OCPP_VERSION = "1.6"

# OCPP 1.6 section 7 (SampledValue): defaults of the optional fields. The unit defaults to
# "Wh" only "if the (default) measurand is an Energy type"; other measurands have none.
DEFAULT_MEASURAND = "Energy.Active.Import.Register"
DEFAULT_CONTEXT = "Sample.Periodic"
DEFAULT_FORMAT = "Raw"
DEFAULT_LOCATION = "Outlet"

# BootNotification field (snake_case, as the ocpp library hands it over) -> reported key.
CHARGE_POINT_FIELDS = {
    "charge_point_vendor": "vendor",
    "charge_point_model": "model",
    "charge_point_serial_number": "serialNumber",
    "charge_box_serial_number": "chargeBoxSerialNumber",
    "firmware_version": "firmwareVersion",
    "iccid": "iccid",
    "imsi": "imsi",
    "meter_type": "meterType",
    "meter_serial_number": "meterSerialNumber",
}


class Reporter:
    """Builds the contract's topics and publishes (QoS 1, never lost) through ``mqtt``."""

    def __init__(self, mqtt: MqttClient, topics: Topics, bridge_id: str) -> None:
        self.mqtt = mqtt
        self.topics = topics
        self.bridge_id = bridge_id
        # The bridge's current MQTT connection (see bridge.app): stamped on presence and
        # status so the twin tells a re-announcement from a stale message.
        self.epoch: float | None = None
        # Chargers whose last presence said online, with their "since": re-announced after
        # every MQTT reconnect (the twin may have marked them offline meanwhile).
        self.held: dict[str, float] = {}
        # The OCPP version each held charger speaks, when not 1.6 (presence says it).
        self.versions: dict[str, str] = {}

    def report(
        self, charger_id: str, reported: Mapping[str, Any], at: float, token: str | None = None
    ) -> None:
        """A partial reported state (merge patch) stamped with its source time ``at``."""
        message: dict[str, Any] = {"state": {"reported": dict(reported)}, "timestamp": at}
        if token is not None:
            message["clientToken"] = token
        self.mqtt.publish(self.topics.shadow(charger_id, "update"), message)

    def telemetry(self, charger_id: str, kind: str, payload: Mapping[str, Any]) -> None:
        self.mqtt.publish(self.topics.telemetry(charger_id, kind), dict(payload))

    def event(self, charger_id: str, kind: str, payload: Mapping[str, Any]) -> None:
        self.mqtt.publish(self.topics.events(charger_id, kind), dict(payload))

    def presence(
        self, charger_id: str, online: bool, since: float, ocpp_version: str = OCPP_VERSION
    ) -> None:
        """The retained presence: the twin writes it into ``reported.connection`` (the one
        writer of ``online``/``since``, which also orders a late "offline" of an old socket
        against the new one's "online"; see ``twin.presence``). A shadow report of the same
        facts here would be a second write, and its documents, for every change."""
        if ocpp_version == OCPP_VERSION:
            self.versions.pop(charger_id, None)
        else:
            self.versions[charger_id] = ocpp_version
        if online:
            self.held[charger_id] = since
        self.announce(charger_id, online, since)
        if not online:
            self.held.pop(charger_id, None)
            self.versions.pop(charger_id, None)

    def announce(self, charger_id: str, online: bool, since: float) -> None:
        """The retained presence alone: also sent again for every held charger after each
        MQTT (re)connect, under the new epoch."""
        message: dict[str, Any] = {
            "online": online,
            "since": since,
            "ocppVersion": self.versions.get(charger_id, OCPP_VERSION),
            "bridge": self.bridge_id,
        }
        if self.epoch is not None:
            message["epoch"] = self.epoch
        self.mqtt.publish(self.topics.presence(charger_id), message, retain=True)

    def command_result(self, charger_id: str, result: Mapping[str, Any]) -> None:
        self.mqtt.publish(f"{self.topics.command(charger_id)}/result", dict(result))

    def bridge_status(self, online: bool) -> None:
        self.mqtt.publish(
            self.topics.bridge_status(self.bridge_id), self.status(online, now()), retain=True
        )

    def status(self, online: bool, since: float | None = None) -> dict[str, Any]:
        """The bridge status payload; the last will is ``status(False)`` (no time known)."""
        message: dict[str, Any] = {"online": online}
        if since is not None:
            message["since"] = since
        if self.epoch is not None:
            message["epoch"] = self.epoch
        return message


# --- payload builders (pure) ---------------------------------------------------------------
def charge_point_of(boot: Mapping[str, Any]) -> dict[str, Any]:
    """``reported.chargePoint`` from a BootNotification: only the fields it carried."""
    reported: dict[str, Any] = {}
    for field, key in CHARGE_POINT_FIELDS.items():
        value = boot.get(field)
        if value is not None:
            reported[key] = value
    if "serialNumber" not in reported and "chargeBoxSerialNumber" in reported:
        # chargeBoxSerialNumber is deprecated in favour of chargePointSerialNumber (1.6).
        reported["serialNumber"] = reported["chargeBoxSerialNumber"]
    return reported


def sampled_value(sample: Mapping[str, Any]) -> dict[str, Any]:
    """One SampledValue with the OCPP 1.6 defaults filled in and the value as a float."""
    measurand = sample.get("measurand") or DEFAULT_MEASURAND
    unit = sample.get("unit")
    if unit is None and measurand.startswith("Energy."):
        unit = "Wh"
    raw = sample.get("value")
    out: dict[str, Any] = {
        "measurand": measurand,
        "phase": sample.get("phase"),
        "unit": unit,
        "value": None,
        "context": sample.get("context") or DEFAULT_CONTEXT,
        "location": sample.get("location") or DEFAULT_LOCATION,
    }
    if (sample.get("format") or DEFAULT_FORMAT) == "SignedData":
        out["signedData"] = raw
        return out
    try:
        value = float(str(raw))
    except ValueError:
        value = math.nan
    if math.isfinite(value):
        out["value"] = value
    else:
        # Not a number, or NaN / Infinity / beyond a double ("1e999"): no store and no
        # consumer can use it as a number (JSON has no NaN), so the text goes in ``raw``.
        out["raw"] = raw
    return out


def meter_value_messages(
    read_time: Callable[[object], float],
    connector_id: int | None,
    transaction_id: int | None,
    meter_values: Iterable[Mapping[str, Any]],
) -> list[dict[str, Any]]:
    """One telemetry message per MeterValue element (each carries its own timestamp, judged
    by ``read_time``: :meth:`bridge.times.ChargerClock.read`)."""
    messages = []
    for meter_value in meter_values:
        samples = meter_value.get("sampled_value") or []
        messages.append(
            {
                "connectorId": connector_id,
                "transactionId": transaction_id,
                "timestamp": read_time(meter_value.get("timestamp")),
                "values": [sampled_value(sample) for sample in samples],
            }
        )
    return messages
