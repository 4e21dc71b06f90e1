"""The desired-state contract: what operators may ask a charger to become.

One JSON Schema (draft 2020-12), used by the twin on every desired update (MQTT answers
422) and by the API before it publishes (HTTP answers 422), so both refuse the same input.
Values follow OCPP 1.6: configuration values are CiString500 (section 9.1.4), connector
ids are integers where 0 is the whole charger (section 5.2). An OCPP 2.0.1 station's
configuration keys name a device-model variable (``COMPONENT/VARIABLE``, the scheme of
``bridge.v201.devicemodel`` and docs/ocpp201.md); its ports are EVSE ids, like connector ids.
"""

from __future__ import annotations

from typing import Any

from jsonschema import Draft202012Validator

# Configuration keys that hold a secret and are never desired state (see "config" below).
SECRET_KEYS = frozenset({"AuthorizationKey", "SecurityCtrlr/BasicAuthPassword"})

# One name or instance in a 2.0.1 device-model key, its separators percent-encoded.
_NAME = "[A-Za-z0-9_*+|=%-]{1,150}"
# bridge.v201.devicemodel: component[:instance][@evse[.connector]]/variable[:instance][#type]
DEVICE_MODEL_KEY = (
    f"^{_NAME}(:{_NAME})?(@[0-9]{{1,3}}([.][0-9]{{1,3}})?)?"
    f"/{_NAME}(:{_NAME})?(#(Target|MinSet|MaxSet))?$"
)

# One charging limit (the failsafe's or a connector's), written out where it is used: the
# API's OpenAPI document embeds this schema, where a "#/$defs/..." reference would not resolve.
_LIMIT: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["limit"],
    "properties": {
        # 0 pauses charging; in the unit of the section (A per phase, or W).
        "limit": {"type": "number", "minimum": 0, "maximum": 1_000_000},
        "phases": {"enum": [1, 2, 3]},
    },
}

DESIRED_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "$id": "urn:chargetwin:desired-state",
    "title": "Desired state of a charger",
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "config": {
            "description": "OCPP configuration keys and the values they should have.",
            "type": "object",
            # AuthorizationKey is the charger's password (OCPP 1.6 security whitepaper):
            # desired state is readable by viewers, so it is set by a password rotation
            # (POST /chargers/{id}/credentials/rotate), never here.
            "propertyNames": {
                "anyOf": [
                    {"pattern": "^[A-Za-z0-9_.\\-]{1,50}$"},  # OCPP 1.6 keys
                    {"pattern": DEVICE_MODEL_KEY},  # OCPP 2.0.1 device-model keys
                ],
                "not": {"enum": sorted(SECRET_KEYS)},
            },
            "additionalProperties": {"type": "string", "maxLength": 500},
        },
        "availability": {
            "description": "Per connector ('0' = the whole charger): Operative or Inoperative.",
            "type": "object",
            "propertyNames": {"pattern": "^(0|[1-9][0-9]{0,2})$"},
            "additionalProperties": {"enum": ["Operative", "Inoperative"]},
        },
        "firmware": {
            "description": "Firmware version the charger should run (from the catalog).",
            "type": "object",
            "additionalProperties": False,
            "required": ["version"],
            "properties": {"version": {"type": "string", "minLength": 1, "maxLength": 50}},
        },
        "chargingLimit": {
            "description": (
                "Charging limits kept by OCPP charging profiles (docs/shadow.md, Charging "
                "limits): a failsafe for the whole charger and one limit per connector."
            ),
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "site": {"type": "string", "maxLength": 100},
                "unit": {"enum": ["A", "W"]},
                "failsafe": _LIMIT,
                "connectors": {
                    "type": "object",
                    "propertyNames": {"pattern": "^[1-9][0-9]{0,2}$"},
                    "additionalProperties": _LIMIT,
                },
            },
        },
    },
}

_validator = Draft202012Validator(DESIRED_SCHEMA)


def desired_errors(desired: dict[str, Any]) -> list[tuple[str, str]]:
    """``(JSON pointer, message)`` for every violation; empty when the state is valid."""
    out = []
    for error in sorted(_validator.iter_errors(desired), key=lambda e: list(e.absolute_path)):
        pointer = "/desired" + "".join(
            "/" + str(p).replace("~", "~0").replace("/", "~1") for p in error.absolute_path
        )
        message = error.message
        if error.validator == "not" and error.instance in SECRET_KEYS:
            pointer += f"/{error.instance}"
            message = (
                f"{error.instance} is the charger's password: rotate it with "
                "POST /api/v1/chargers/{id}/credentials/rotate"
            )
        out.append((pointer, message))
    return out
