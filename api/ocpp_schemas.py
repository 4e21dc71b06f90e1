"""OCPP 1.6 and 2.0.1 request schemas as HTTP bodies: the calls that operators send as they are.

The 1.6 commands with a hand-written body (``api.routes.commands``) are the everyday ones;
the rest (reservations, local lists, smart charging, the security extension) and every
2.0.1 command take the OCPP payload itself. Their bodies are the ``ocpp`` package's own
JSON schemas of the call, so the HTTP contract is the OCPP specification's: local ``$ref``s
inlined for the OpenAPI document, and the same schema checks the body before the charger
is bothered (422 with a JSON pointer per offending field).
"""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from typing import Any

from jsonschema import Draft7Validator

from api.problems import ProblemError

OCPP16 = "1.6"
OCPP201 = "2.0.1"
# Where the ``ocpp`` package keeps each version's schema files, and how it names them.
PACKAGES = {OCPP16: ("ocpp.v16", "{action}.json"), OCPP201: ("ocpp.v201", "{action}Request.json")}
DROPPED = ("$schema", "$id", "definitions", "id", "comment")


# OCPP-J's "integer" is a 32-bit signed integer (as RemoteStopTransaction's transactionId
# in api.routes.commands); the schema files leave it unbounded, the bound is said here so
# the document promises only what a charger can take.
INT32 = {"minimum": -(2**31), "maximum": 2**31 - 1}


def _inline(node: Any, definitions: dict[str, Any]) -> Any:
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/definitions/"):
            return _inline(definitions[ref.removeprefix("#/definitions/")], definitions)
        out = {
            key: _inline(value, definitions)
            for key, value in node.items()
            # "additionalProperties" on a string enum is noise the spec's files carry, and
            # "javaType" (2.0.1) names a class of the specification's code generator.
            if not (key == "additionalProperties" and node.get("type") == "string")
            and key != "javaType"
        }
        if out.get("type") == "integer":
            out = {**INT32, **out}
        return out
    if isinstance(node, list):
        return [_inline(item, definitions) for item in node]
    return node


@cache
def request_schema(action: str, version: str = OCPP16) -> dict[str, Any]:
    """The self-contained JSON schema of ``action``'s request in OCPP ``version`` (shared:
    do not change it)."""
    package, name = PACKAGES[version]
    text = resources.files(package).joinpath("schemas", name.format(action=action))
    raw = json.loads(text.read_text("utf-8"))
    schema: dict[str, Any] = _inline(raw, raw.get("definitions", {}))
    for key in DROPPED:
        schema.pop(key, None)
    schema["title"] = f"{action}Request"
    return schema


@cache
def _validator(action: str, version: str) -> Draft7Validator:
    return Draft7Validator(request_schema(action, version))


def request_errors(action: str, payload: Any, version: str = OCPP16) -> list[ProblemError]:
    """Every way ``payload`` breaks ``action``'s schema in ``version``, each with its JSON
    pointer."""
    validator = _validator(action, version)
    errors = sorted(validator.iter_errors(payload), key=lambda e: list(e.path))
    return [
        ProblemError(
            pointer="".join(f"/{str(p).replace('~', '~0').replace('/', '~1')}" for p in e.path),
            message=e.message,
        )
        for e in errors
    ]
