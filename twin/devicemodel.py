"""The OCPP 2.0.1 device-model keys of the shadow, and what a desired value must respect.

Shadow semantics shared by the bridge (which reconciles ``desired.config`` with
SetVariables) and the API (which answers 422 before anything is sent), so both refuse the
same values for the same reasons. A 2.0.1 charging station describes itself as components
with variables, each with up to four attributes (Actual, Target, MinSet, MaxSet; OCPP
2.0.1 part 1 section 4); one key in ``reported.config`` names one attribute::

    key        = component "/" variable
    component  = name [":" instance] ["@" evseId ["." connectorId]]
    variable   = name [":" instance] ["#" attributeType]      (no "#" for Actual)

e.g. ``OCPPCommCtrlr/HeartbeatInterval``, ``EVSE@1/AvailabilityState``,
``Connector@1.2/ConnectorType``, ``SampledDataCtrlr/TxUpdatedInterval#Target``,
``Fan:inlet/Speed``. The characters ``% / : @ # .`` inside a name or instance are
percent-encoded (``%2F`` for ``/``), so a key reads back into exactly one attribute. A 1.6
key never holds ``/``; that tells them apart. ``reported.deviceModel[key]`` keeps the
attribute's ``mutability``, ``dataType`` and limits, which :func:`value_problem` checks.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

ACTUAL = "Actual"
# Characters that separate the parts of a key; percent-encoded inside names (and "%").
_RESERVED = "%/:@#."
_ESCAPES = {ch: f"%{ord(ch):02X}" for ch in _RESERVED}
_CODES = {code[1:]: ch for ch, code in _ESCAPES.items()}


class KeyError201(ValueError):
    """A config key that does not follow the 2.0.1 key scheme."""


_ESCAPE_TABLE = str.maketrans(_ESCAPES)


@lru_cache(maxsize=4096)
def _escape(text: str) -> str:
    # Cached: every station of a model reports the same names (bounded: a station chooses
    # its names).
    return text.translate(_ESCAPE_TABLE)


def _unescape(text: str) -> str:
    if "%" not in text:
        return text
    out, i = [], 0
    while i < len(text):
        if text[i] == "%":
            code = text[i + 1 : i + 3]
            if len(code) != 2 or code.upper() not in _CODES:
                raise KeyError201(f"bad escape %{code} in {text!r}")
            out.append(_CODES[code.upper()])
            i += 3
        else:
            out.append(text[i])
            i += 1
    return "".join(out)


@dataclass(frozen=True, slots=True)
class VariableKey:
    """One attribute of one variable of one component, as OCPP 2.0.1 identifies it."""

    component: str
    variable: str
    component_instance: str | None = None
    evse: int | None = None
    connector: int | None = None
    variable_instance: str | None = None
    attribute: str = ACTUAL

    def text(self) -> str:
        """The key in ``reported.config`` (see the module docstring)."""
        comp = _escape(self.component)
        if self.component_instance is not None:
            comp += ":" + _escape(self.component_instance)
        if self.evse is not None:
            comp += f"@{self.evse}"
            if self.connector is not None:
                comp += f".{self.connector}"
        var = _escape(self.variable)
        if self.variable_instance is not None:
            var += ":" + _escape(self.variable_instance)
        if self.attribute != ACTUAL:
            var += "#" + self.attribute
        return f"{comp}/{var}"

    def component_payload(self) -> dict[str, Any]:
        """The ComponentType of a SetVariables / GetVariables request."""
        component: dict[str, Any] = {"name": self.component}
        if self.component_instance is not None:
            component["instance"] = self.component_instance
        if self.evse is not None:
            evse: dict[str, Any] = {"id": self.evse}
            if self.connector is not None:
                evse["connectorId"] = self.connector
            component["evse"] = evse
        return component

    def variable_payload(self) -> dict[str, Any]:
        variable: dict[str, Any] = {"name": self.variable}
        if self.variable_instance is not None:
            variable["instance"] = self.variable_instance
        return variable

    @classmethod
    def of(
        cls, component: Mapping[str, Any], variable: Mapping[str, Any], attribute: str | None
    ) -> VariableKey:
        """The key of a ComponentType, VariableType and attribute type from a message."""
        evse = component.get("evse")
        evse_id = connector = None
        if isinstance(evse, Mapping):
            evse_id = int(evse["id"])
            if evse.get("connectorId") is not None:
                connector = int(evse["connectorId"])
        return cls(
            component=str(component["name"]),
            variable=str(variable["name"]),
            component_instance=_optional(component.get("instance")),
            evse=evse_id,
            connector=connector,
            variable_instance=_optional(variable.get("instance")),
            attribute=str(attribute or ACTUAL),
        )


def key_text(
    component: Mapping[str, Any], variable: Mapping[str, Any], attribute: str | None
) -> str:
    """``VariableKey.of(component, variable, attribute).text()`` without building the key:
    a device model report names thousands of attributes."""
    text = _escape(str(component["name"]))
    instance = component.get("instance")
    if instance is not None:
        text += ":" + _escape(str(instance))
    evse = component.get("evse")
    if isinstance(evse, Mapping):
        text += f"@{int(evse['id'])}"
        if evse.get("connectorId") is not None:
            text += f".{int(evse['connectorId'])}"
    text += "/" + _escape(str(variable["name"]))
    instance = variable.get("instance")
    if instance is not None:
        text += ":" + _escape(str(instance))
    kind = str(attribute or ACTUAL)
    return text if kind == ACTUAL else f"{text}#{kind}"


def _optional(value: Any) -> str | None:
    return None if value is None else str(value)


def is_device_model_key(key: str) -> bool:
    """A 2.0.1 device-model key (a 1.6 configuration key holds no ``/``)."""
    return "/" in key


def parse_key(key: str) -> VariableKey:
    """The attribute a ``reported.config`` key names; :class:`KeyError201` if malformed."""
    comp, sep, var = key.partition("/")
    if not sep or not comp or not var or "/" in var:
        raise KeyError201(f"{key!r} is not COMPONENT/VARIABLE")
    attribute = ACTUAL
    if "#" in var:
        var, _, attribute = var.partition("#")
        if attribute not in ("Actual", "Target", "MinSet", "MaxSet"):
            raise KeyError201(f"{key!r}: unknown attribute type {attribute!r}")
    var_name, _, var_instance = var.partition(":")
    evse = connector = None
    if "@" in comp:
        comp, _, where = comp.partition("@")
        evse_text, dot, connector_text = where.partition(".")
        if not evse_text.isdigit() or (dot and not connector_text.isdigit()):
            raise KeyError201(f"{key!r}: EVSE must be @N or @N.M")
        evse = int(evse_text)
        connector = int(connector_text) if dot else None
    comp_name, _, comp_instance = comp.partition(":")
    if not comp_name or not var_name:
        raise KeyError201(f"{key!r}: empty component or variable name")
    return VariableKey(
        component=_unescape(comp_name),
        variable=_unescape(var_name),
        component_instance=_unescape(comp_instance) if comp_instance else None,
        evse=evse,
        connector=connector,
        variable_instance=_unescape(var_instance) if var_instance else None,
        attribute=attribute,
    )


def value_problem(value: str, meta: Mapping[str, Any]) -> str | None:
    """Why ``value`` cannot be set on a variable described by ``meta``; None when it can.

    The checks OCPP 2.0.1 lets a CSMS make before SetVariables: mutability and the data
    type with its limits and list of values (part 2, DataEnumType).
    """
    if meta.get("mutability") == "ReadOnly":
        return "the variable is ReadOnly"
    kind = meta.get("dataType")
    if kind == "integer":
        try:
            number: float = int(value)
        except ValueError:
            return f"{value!r} is not an integer"
    elif kind == "decimal":
        try:
            number = float(value)
        except ValueError:
            return f"{value!r} is not a decimal"
    elif kind == "boolean":
        if value not in ("true", "false"):
            return f"{value!r} is not true or false"
        return None
    elif kind == "OptionList":
        options = str(meta.get("valuesList") or "").split(",")
        if meta.get("valuesList") and value not in options:
            return f"{value!r} is not one of {meta['valuesList']}"
        return None
    else:
        return None
    low, high = meta.get("minLimit"), meta.get("maxLimit")
    if isinstance(low, int | float) and number < low:
        return f"{value} is below the minimum {low}"
    if isinstance(high, int | float) and number > high:
        return f"{value} is above the maximum {high}"
    return None


def config_problems(
    config: Mapping[str, Any], reported: Mapping[str, Any]
) -> list[tuple[str, str]]:
    """``(key, why)`` for each desired ``config`` value a 2.0.1 station would be refused.

    ``reported`` is the station's reported state; ``config`` the desired keys being set
    (``None``, a deletion, is never a problem). Only a station that reports its OCPP
    version as 2.0.1 is checked: a key outside the scheme, a malformed key, and what
    :func:`value_problem` finds against ``reported.deviceModel`` (a key the device model
    does not describe is left to the station, which answers UnknownVariable).
    """
    connection = reported.get("connection")
    version = connection.get("ocppVersion") if isinstance(connection, Mapping) else None
    if version != "2.0.1":
        return []
    model = reported.get("deviceModel")
    model = model if isinstance(model, Mapping) else {}
    problems: list[tuple[str, str]] = []
    for key, value in config.items():
        if value is None:
            continue
        if not is_device_model_key(key):
            problems.append((key, "OCPP 2.0.1: config keys are COMPONENT/VARIABLE"))
            continue
        try:
            parse_key(key)
        except KeyError201 as exc:
            problems.append((key, str(exc)))
            continue
        meta = model.get(key)
        if isinstance(meta, Mapping) and isinstance(value, str):
            problem = value_problem(value, meta)
            if problem is not None:
                problems.append((key, problem))
    return problems
