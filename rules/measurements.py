"""MQTT telemetry, events and presence → points: the schema of ``docs/telemetry.md``.

Pure functions, one per kind of message, so the recorder only batches and ships. Each
gets the charger's own tags (``charger``, and ``site`` when the registry gives one):
every point starts from them, so rules filter and group by site as by charger. Numbers
are written as floats and states as strings, one type per field, as InfluxDB requires.
Times are the charger's own where the bridge carries one, receipt time else.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

from rules.points import FieldValue, Point, make_point, to_ns

# Stop reasons (OCPP 1.6 section 7.38 Reason) that end a session normally; anything else
# (EmergencyStop, PowerLoss, Reboot, ...) is not a successful completion (EV-ChART).
NORMAL_STOP_REASONS = frozenset({"Local", "Remote", "EVDisconnected", "DeAuthorized", ""})

Converter = Callable[[Mapping[str, str], dict[str, Any], float], list[Point]]


# Sampled-value keys that become meter_values tags (OCPP 1.6 section 7.43 SampledValue).
_SAMPLE_TAGS = ("measurand", "phase", "unit", "location", "context")


def meter_values(charger: Mapping[str, str], body: dict[str, Any], now: float) -> list[Point]:
    """One point per sampled value; the hot path of the recorder, so it builds the points
    itself with the rules of :func:`make_point` (null tags dropped, numbers as floats)."""
    time = to_ns(body.get("timestamp"), now)
    series = dict(charger)
    connector = body.get("connectorId")
    if connector is not None and (text := str(connector)):
        series["connector"] = text
    out = []
    for sample in body.get("values") or ():
        if not isinstance(sample, dict):
            continue
        value = sample.get("value")
        fields: dict[str, FieldValue]
        if isinstance(value, int | float):  # bool included, as 1.0/0.0
            fields = {"value": float(value)}
        else:
            raw = sample.get("raw") or sample.get("signedData")
            if raw is None:
                continue
            fields = {"raw": str(raw)}
        tags = series.copy()
        for key in _SAMPLE_TAGS:
            tag = sample.get(key)
            if tag is not None and (text := str(tag)):
                tags[key] = text
        out.append(Point("meter_values", tags, fields, time))
    return out


def status(charger: Mapping[str, str], body: dict[str, Any], now: float) -> list[Point]:
    point = make_point(
        "connector_status",
        {**charger, "connector": body.get("connectorId")},
        {
            "status": body.get("status"),
            "previous": body.get("previous"),
            "error_code": body.get("errorCode"),
            "info": body.get("info"),
            "vendor_error_code": body.get("vendorErrorCode"),
        },
        to_ns(body.get("timestamp"), now),
    )
    return [point] if point else []


def presence(charger: Mapping[str, str], body: dict[str, Any], now: float) -> list[Point]:
    online = bool(body.get("online"))
    point = make_point(
        "presence",
        charger,
        {"state": "online" if online else "offline", "online": online},
        to_ns(body.get("since"), now),
    )
    return [point] if point else []


def transaction(charger: Mapping[str, str], body: dict[str, Any], now: float) -> list[Point]:
    event = body.get("event")
    fields: dict[str, Any] = {"transaction_id": _text(body.get("transactionId"))}
    if event == "started":
        fields.update(meter_start=body.get("meterStart"), id_tag=body.get("idTag"))
    elif event == "stopped":
        start, stop = body.get("meterStart"), body.get("meterStop")
        energy = (
            stop - start
            if isinstance(start, int | float) and isinstance(stop, int | float)
            else None
        )
        reason = str(body.get("reason") or "")
        fields.update(
            meter_start=start,
            meter_stop=stop,
            energy_wh=energy,
            reason=reason or "Local",
            zero_energy=energy is not None and energy <= 0,
            successful=reason in NORMAL_STOP_REASONS and energy is not None and energy > 0,
            sessions=1.0,
        )
        started = body.get("startedAt")
        if started is not None:
            fields["duration_s"] = (to_ns(body.get("timestamp"), now) - to_ns(started, now)) / 1e9
    else:
        return []
    point = make_point(
        "sessions",
        {**charger, "connector": body.get("connectorId"), "event": event},
        fields,
        to_ns(body.get("timestamp"), now),
    )
    return [point] if point else []


def boot(charger: Mapping[str, str], body: dict[str, Any], now: float) -> list[Point]:
    point = make_point(
        "boots",
        charger,
        {
            "count": 1.0,
            "vendor": body.get("chargePointVendor") or body.get("vendor"),
            "model": body.get("chargePointModel") or body.get("model"),
            "firmware_version": body.get("firmwareVersion"),
        },
        to_ns(body.get("timestamp"), now),
    )
    return [point] if point else []


def firmware(charger: Mapping[str, str], body: dict[str, Any], now: float) -> list[Point]:
    point = make_point(
        "firmware_status",
        charger,
        {"status": body.get("status"), "request_id": _text(body.get("requestId"))},
        to_ns(body.get("timestamp"), now),
    )
    return [point] if point else []


def diagnostics(charger: Mapping[str, str], body: dict[str, Any], now: float) -> list[Point]:
    point = make_point(
        "diagnostics_status",
        {**charger, "kind": body.get("kind") or "diagnostics"},
        {"status": body.get("status"), "request_id": _text(body.get("requestId"))},
        to_ns(body.get("timestamp"), now),
    )
    return [point] if point else []


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


# Topic tail (after chargers/{id}/) → converter.
CONVERTERS: dict[str, Converter] = {
    "telemetry/meterValues": meter_values,
    "events/status": status,
    "events/transaction": transaction,
    "events/boot": boot,
    "events/firmware": firmware,
    "events/diagnostics": diagnostics,
    "presence": presence,
    # The twin's record of every change of reported.connection (docs/mqtt.md): the same
    # point as the bridge's presence when the bridge made the change, so the store keeps one.
    "presence/shadow": presence,
}


def charger_of(prefix: str, topic: str) -> str:
    """The charger id of a ``{prefix}/chargers/{id}/...`` topic; "" for other topics."""
    head = f"{prefix}/chargers/"
    if not topic.startswith(head):
        return ""
    return topic[len(head) :].partition("/")[0]


def convert(
    prefix: str, topic: str, payload: bytes, now: float, site: str | None = None
) -> list[Point]:
    """The points of one message; [] for kinds not recorded or unreadable payloads."""
    head = f"{prefix}/chargers/"
    if not topic.startswith(head):
        return []
    charger, _, tail = topic[len(head) :].partition("/")
    converter = CONVERTERS.get(tail)
    if converter is None or not charger:
        return []
    try:
        body = json.loads(payload)
    except ValueError:
        return []
    if not isinstance(body, dict):
        return []
    tags = {"charger": charger, "site": site} if site else {"charger": charger}
    return converter(tags, body, now)
