"""The OCPP 2.0.1 device model in the shadow: one key per variable attribute.

The key scheme and the checks of a desired value live in :mod:`twin.devicemodel` (the API
refuses with the same checks); they are re-exported here for the bridge's modules.

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

from twin.devicemodel import ACTUAL as ACTUAL
from twin.devicemodel import KeyError201 as KeyError201
from twin.devicemodel import VariableKey as VariableKey
from twin.devicemodel import is_device_model_key as is_device_model_key
from twin.devicemodel import key_text as key_text
from twin.devicemodel import parse_key as parse_key
from twin.devicemodel import value_problem as value_problem

# Bounds on what one station may make the bridge hold while a report is assembled.
MAX_REPORT_PARTS = 1000
MAX_REPORT_ENTRIES = 20_000
MAX_PENDING_REPORTS = 8
# Metadata kept from variableCharacteristics (OCPP 2.0.1 part 2, VariableCharacteristicsType).
_CHARACTERISTICS = ("unit", "dataType", "minLimit", "maxLimit", "valuesList")


def report_entries(
    report_data: Iterable[Mapping[str, Any]],
) -> tuple[dict[str, str], dict[str, dict[str, Any]]]:
    """``(config, deviceModel)`` from NotifyReport ``reportData`` (ReportDataType list)."""
    config: dict[str, str] = {}
    model: dict[str, dict[str, Any]] = {}
    for entry in report_data:
        characteristics = entry.get("variableCharacteristics") or {}
        for attribute in entry.get("variableAttribute") or ():
            text = key_text(entry["component"], entry["variable"], attribute.get("type"))
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
