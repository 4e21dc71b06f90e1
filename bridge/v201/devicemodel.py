"""The OCPP 2.0.1 device model in the shadow: one key per variable attribute.

A 2.0.1 charging station describes itself as components (``OCPPCommCtrlr``, ``EVSE``,
``Connector``...) with variables, each with up to four attributes (Actual, Target,
MinSet, MaxSet; OCPP 2.0.1 part 1 section 4). A 1.6 charger has flat configuration keys.
Both land in ``reported.config`` so profiles, drift reports and the dashboard need no
version switch; a 2.0.1 key names everything that identifies one attribute::

    key        = component "/" variable
    component  = name [":" instance] ["@" evseId ["." connectorId]]
    variable   = name [":" instance] ["#" attributeType]      (no "#" for Actual)

e.g. ``OCPPCommCtrlr/HeartbeatInterval``, ``EVSE@1/AvailabilityState``,
``Connector@1.2/ConnectorType``, ``TxCtrlr/EVConnectionTimeOut``,
``SampledDataCtrlr/TxUpdatedInterval#Target``, ``Fan:inlet/Speed``. The characters
``% / : @ # .`` inside a name or instance are percent-encoded (``%2F`` for ``/``), so a key
reads back into exactly one attribute. A 1.6 key never holds ``/``; that tells them apart.

What the value cannot say is kept beside it in ``reported.deviceModel[key]``:
``mutability`` (ReadOnly, WriteOnly, ReadWrite), ``dataType`` and, when the station gives
them, ``unit``, ``minLimit``, ``maxLimit``, ``valuesList``, ``persistent``, ``constant``,
so a desired value for a ReadOnly variable or of the wrong type can be refused before
anything is sent. A WriteOnly attribute (a password) has no value and appears only there.

A report (GetBaseReport, GetReport) arrives as NotifyReport parts numbered by ``seqNo``
and continued while ``tbc`` is true (OCPP 2.0.1 B07/B08); :class:`ReportAssembly` puts
them together per ``requestId`` and says when a report is whole.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

ACTUAL = "Actual"
# Characters that separate the parts of a key; percent-encoded inside names (and "%").
_RESERVED = "%/:@#."
_ESCAPES = {ch: f"%{ord(ch):02X}" for ch in _RESERVED}
_CODES = {code[1:]: ch for ch, code in _ESCAPES.items()}
# Bounds on what one station may make the bridge hold while a report is assembled.
MAX_REPORT_PARTS = 1000
MAX_REPORT_ENTRIES = 20_000
MAX_PENDING_REPORTS = 8
# Metadata kept from variableCharacteristics (OCPP 2.0.1 part 2, VariableCharacteristicsType).
_CHARACTERISTICS = ("unit", "dataType", "minLimit", "maxLimit", "valuesList")


class KeyError201(ValueError):
    """A config key that does not follow the 2.0.1 key scheme."""


_ESCAPE_TABLE = str.maketrans(_ESCAPES)


def _escape(text: str) -> str:
    return text.translate(_ESCAPE_TABLE)  # C speed: a report has thousands of names


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


def report_entries(
    report_data: Iterable[Mapping[str, Any]],
) -> tuple[dict[str, str], dict[str, dict[str, Any]]]:
    """``(config, deviceModel)`` from NotifyReport ``reportData`` (ReportDataType list)."""
    config: dict[str, str] = {}
    model: dict[str, dict[str, Any]] = {}
    for entry in report_data:
        characteristics = entry.get("variableCharacteristics") or {}
        for attribute in entry.get("variableAttribute") or ():
            key = VariableKey.of(entry["component"], entry["variable"], attribute.get("type"))
            text = key.text()
            meta: dict[str, Any] = {"mutability": attribute.get("mutability", "ReadWrite")}
            for name in _CHARACTERISTICS:
                if characteristics.get(name) is not None:
                    meta[name] = characteristics[name]
            for flag in ("persistent", "constant"):
                if attribute.get(flag) is not None:
                    meta[flag] = attribute[flag]
            model[text] = meta
            value = attribute.get("value")
            if isinstance(value, str) and meta["mutability"] != "WriteOnly":
                config[text] = value
    return config, model


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


@dataclass(slots=True)
class _Report:
    parts: dict[int, list[Any]] = field(default_factory=dict)
    last: int | None = None  # seqNo of the part with tbc false
    entries: int = 0
    done: asyncio.Future[list[Any]] | None = None


class ReportTooLargeError(ValueError):
    """A report with more parts or entries than the bridge holds for one station."""


class ReportAssembly:
    """NotifyReport parts by ``requestId`` until the report is whole (seqNo 0..n, tbc)."""

    def __init__(self) -> None:
        self._reports: dict[int, _Report] = {}

    def expect(self, request_id: int) -> asyncio.Future[list[Any]]:
        """A future for the whole ``reportData`` of a report asked for with ``request_id``."""
        report = self._reports.setdefault(request_id, _Report())
        report.done = asyncio.get_running_loop().create_future()
        return report.done

    def forget(self, request_id: int) -> None:
        self._reports.pop(request_id, None)

    def add(self, request_id: int, seq_no: int, tbc: bool, data: list[Any]) -> list[Any] | None:
        """Store one part. A part that completes a report sets the future of
        :meth:`expect`; one that completes a report nobody expected returns its whole
        ``reportData``; anything else returns None.

        A report nobody expected is assembled too (one asked for by an operator's command);
        a repeated seqNo (a part sent again) replaces the part it repeats.
        """
        if request_id not in self._reports and len(self._reports) >= MAX_PENDING_REPORTS:
            oldest = next(iter(self._reports))
            self._fail(oldest, self._reports[oldest], "too many reports at once")
        report = self._reports.setdefault(request_id, _Report())
        if seq_no not in report.parts and len(report.parts) >= MAX_REPORT_PARTS:
            self._fail(request_id, report, f"more than {MAX_REPORT_PARTS} parts")
            return None
        report.entries += len(data) - len(report.parts.get(seq_no, ()))
        if report.entries > MAX_REPORT_ENTRIES:
            self._fail(request_id, report, f"more than {MAX_REPORT_ENTRIES} entries")
            return None
        report.parts[seq_no] = data
        if not tbc:
            report.last = seq_no
        if report.last is None or any(n not in report.parts for n in range(report.last + 1)):
            return None
        whole = [item for n in range(report.last + 1) for item in report.parts[n]]
        del self._reports[request_id]
        if report.done is None:
            return whole
        if not report.done.done():
            report.done.set_result(whole)
        return None

    @property
    def pending(self) -> int:
        """Reports being assembled (bounded by the station's own requestIds)."""
        return len(self._reports)

    def _fail(self, request_id: int, report: _Report, why: str) -> None:
        del self._reports[request_id]
        if report.done is not None and not report.done.done():
            report.done.set_exception(ReportTooLargeError(why))
