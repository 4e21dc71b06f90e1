"""MQTT telemetry, events and presence → points: the schema of ``docs/telemetry.md``.

Pure functions, one per kind of message, so the recorder only batches and ships. Each
gets the charger's own tags (``charger``, and ``site`` when the registry gives one):
every point starts from them, so rules filter and group by site as by charger. Numbers
are written as floats and states as strings, one type per field, as InfluxDB requires.
Times are the charger's own where the bridge carries one, receipt time else.

MQTT is an open contract (anyone allowed on the telemetry topics may publish), so a
message is validated here: what no store can hold (a time beyond 64-bit nanoseconds, a
number that is not finite, a lone surrogate, ...) comes back as a :class:`Rejection`
with its reason, point by point, next to the message's good points.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

from chargetwin.topics import Topics
from rules.points import (
    MAX_TIME,
    MIN_TIME,
    CheckedPoints,
    FieldValue,
    InvalidPoint,
    Point,
    Rejection,
    is_known_tag_value,
    make_point,
    sort_out,
    to_ns,
)

# Stop reasons (OCPP 1.6 section 7.38 Reason) that end a session normally; anything else
# (EmergencyStop, PowerLoss, Reboot, ...) is not a successful completion (EV-ChART).
NORMAL_STOP_REASONS = frozenset({"Local", "Remote", "EVDisconnected", "DeAuthorized", ""})


class Conversion(NamedTuple):
    """What one message gives: the points to record, and what was refused and why."""

    points: CheckedPoints
    rejections: list[Rejection]


NOTHING = Conversion(CheckedPoints(), [])


def _refused(reason: str) -> Conversion:
    """A message that gives no point, refused with ``reason``."""
    return Conversion(CheckedPoints(), [Rejection(reason)])


# A converter's points are checked by convert, unless it checked them itself (Conversion).
Converter = Callable[[Mapping[str, str], dict[str, Any], float], list[Point] | Conversion]


# Sampled-value keys that become meter_values tags (OCPP 1.6 section 7.43 SampledValue).
_SAMPLE_TAGS = ("measurand", "phase", "unit", "location", "context")


def meter_values(charger: Mapping[str, str], body: dict[str, Any], now: float) -> Conversion:
    """One point per sampled value; the hot path of the recorder, so it builds the points
    itself with the rules of :func:`make_point` (null tags dropped, numbers as floats),
    and checks them as it goes: what it has not seen good before (a tag value, a number
    that is not finite, a raw string, a time out of range) sends the message through
    :func:`~rules.points.sort_out`, which refuses the bad points with their reason."""
    time = to_ns(body.get("timestamp"), now)
    # Names are this function's own; values are the payload's and must be known good.
    known = MIN_TIME <= time <= MAX_TIME and all(map(is_known_tag_value, charger.values()))
    series = dict(charger)
    connector = body.get("connectorId")
    if connector is not None and (text := str(connector)):
        series["connector"] = text
        known = known and is_known_tag_value(text)
    # A 2.0.1 station's meter values name their EVSE (the port, so also ``connector``);
    # 1.6 ones carry no evseId and keep their series as they were.
    evse = body.get("evseId")
    if evse is not None and (text := str(evse)):
        series["evse"] = text
        known = known and is_known_tag_value(text)
    out = []
    for sample in body.get("values") or ():
        if not isinstance(sample, dict):
            continue
        value = sample.get("value")
        fields: dict[str, FieldValue]
        if isinstance(value, int | float):  # bool included, as 1.0/0.0
            try:
                number = float(value)
            except OverflowError:  # an int beyond any float: kept for the checks to refuse
                fields, known = {"value": value}, False
            else:
                fields = {"value": number}
                known = known and math.isfinite(number)
        else:
            raw = sample.get("raw") or sample.get("signedData")
            if raw is None:
                continue
            fields, known = {"raw": str(raw)}, False
        tags = series.copy()
        for key in _SAMPLE_TAGS:
            tag = sample.get(key)
            if tag is not None and (text := str(tag)):
                tags[key] = text
                known = known and is_known_tag_value(text)
        out.append(Point("meter_values", tags, fields, time))
    if known:
        return Conversion(CheckedPoints(out), [])
    return Conversion(*sort_out(out))


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


def device_event(charger: Mapping[str, str], body: dict[str, Any], now: float) -> list[Point]:
    """A 2.0.1 NotifyEvent's eventData (OCPP 2.0.1 part 2, EventDataType): one point
    per event, its series the station's component and variable. ``state`` is the actual
    value, or ``cleared`` when the event reports a return to normal, so a rule that holds
    on a value resolves on the clearing whatever value the station sends with it."""
    cleared = body.get("cleared") is True
    actual = _text(body.get("actualValue"))
    evse = body.get("evseId")
    point = make_point(
        "device_events",
        {
            **charger,
            "key": body.get("key"),
            "component": body.get("component"),
            "variable": body.get("variable"),
            # The port identity of every measurement: the EVSE is the port (connector).
            "connector": evse,
            "evse": evse,
            "evse_connector": body.get("evseConnectorId"),
        },
        {
            "state": "cleared" if cleared else actual,
            "actual_value": actual,
            "cleared": cleared,
            "trigger": _text(body.get("trigger")),
            "tech_code": _text(body.get("techCode")),
            "tech_info": _text(body.get("techInfo")),
            "event_id": _text(body.get("eventId")),
            "notification_type": _text(body.get("notificationType")),
            "transaction_id": _text(body.get("transactionId")),
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


def clock_skew(charger: Mapping[str, str], body: dict[str, Any], now: float) -> list[Point]:
    """The bridge's verdict on a charger's clock: ``ahead``/``behind``/``unreadable``, or
    ``ok`` once it is plausible again (bridge/README.md, Charger clocks)."""
    seconds = body.get("seconds")
    point = make_point(
        "clock_skew",
        charger,
        {
            "status": _text(body.get("status")),
            "seconds": float(seconds) if isinstance(seconds, int | float) else None,
        },
        to_ns(body.get("timestamp"), now),
    )
    return [point] if point else []


def site_energy(site: Mapping[str, str], body: dict[str, Any], now: float) -> list[Point]:
    """The energy allocator's report of a site after a pass (docs/sites.md, Reported): one
    ``site_energy`` point (load against limit) and a ``charging_limits`` point per
    connector that is not idle or draws current (what it was allowed against what it
    draws), so rules can alert on a site over its limit and a charger ignoring its own.

    ``excess_a`` is the measured current above the limit (negative: below it), so a rule
    compares one field with a margin; ``over`` says whether it is above at all."""
    reported = body.get("reported")
    if not isinstance(reported, dict):
        raise InvalidPoint("site energy report without a 'reported' object")
    time = to_ns(reported.get("updatedAt"), now)
    load, limit = _number(reported.get("loadA")), _number(reported.get("limitA"))
    excess = None if load is None or limit is None else round(load - limit, 3)
    ignoring = reported.get("ignoring")
    ignoring = set(map(str, ignoring)) if isinstance(ignoring, list) else set()
    paused = reported.get("paused")
    out = [
        make_point(
            "site_energy",
            site,
            {
                "load_a": load,
                "limit_a": limit,
                "headroom_a": _number(reported.get("headroomA")),
                "counted_a": _number(reported.get("countedA")),
                "fixed_a": _number(reported.get("fixedA")),
                "load_kw": _number(reported.get("loadKW")),
                "excess_a": excess,
                "over": None if excess is None else excess > 0,
                "unknown_load": _number(reported.get("unknownLoad")),
                "paused": float(len(paused)) if isinstance(paused, list) else None,
                "ignoring": float(len(ignoring)),
                "window": _text(reported.get("window")),
            },
            time,
        )
    ]
    connectors = reported.get("connectors")
    for key, port in (connectors if isinstance(connectors, dict) else {}).items():
        if not isinstance(port, dict):
            continue
        drawn = _number(port.get("measuredA"))
        if port.get("state") == "idle" and drawn is None:
            continue  # nothing to watch; a point per idle port and pass would be noise
        charger, _, connector = str(key).partition("/")
        allowed = _number(port.get("confirmedA"))
        excess = None if drawn is None or allowed is None else round(drawn - allowed, 3)
        out.append(
            make_point(
                "charging_limits",
                {**site, "charger": charger, "connector": connector},
                {
                    "state": _text(port.get("state")),
                    "allowed_a": allowed,
                    "offered_a": _number(port.get("limitA")),
                    "drawn_a": drawn,
                    "counted_a": _number(port.get("countedA")),
                    "excess_a": excess,
                    "over": None if excess is None else excess > 0,
                    "ignoring": str(key) in ignoring,
                },
                time,
            )
        )
    return [point for point in out if point is not None]


def _number(value: Any) -> float | None:
    """A reported number (the allocator's JSON), None when absent or not a number."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


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
    "events/clockSkew": clock_skew,
    "events/deviceEvent": device_event,
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
) -> Conversion:
    """The points of one message and its rejections; nothing for kinds not recorded.

    Never raises for a payload, whatever it holds: an unreadable message is one rejection,
    a point no store can hold is a rejection of that point alone.
    """
    head = f"{prefix}/chargers/"
    if topic.startswith(head):
        charger, _, tail = topic[len(head) :].partition("/")
        converter = CONVERTERS.get(tail)
        if converter is None or not charger:
            return NOTHING
        tags = {"charger": charger, "site": site} if site else {"charger": charger}
    else:
        site_of_report = Topics(prefix).site_of_energy_report(topic)
        if site_of_report is None:
            return NOTHING
        tail, converter, tags = "site energy report", site_energy, {"site": site_of_report}
    try:
        body = json.loads(payload)
    except (ValueError, RecursionError) as exc:  # RecursionError: nested too deep
        return _refused(f"payload is not JSON: {type(exc).__name__}: {exc}")
    if not isinstance(body, dict):
        return _refused(f"payload is a JSON {type(body).__name__}, not an object")
    try:
        points = converter(tags, body, now)
    except InvalidPoint as exc:
        return _refused(str(exc))
    except Exception as exc:  # a payload shape no converter foresaw: refuse it, with why
        return _refused(f"unreadable {tail}: {type(exc).__name__}: {exc}")
    if isinstance(points, Conversion):
        return points
    return Conversion(*sort_out(points))
