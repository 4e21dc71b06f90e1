"""Charging sessions: the bridge's ``transactions`` table, with peak power from the meter
values in the time-series store, as EV-ChART session records.

EV-ChART field names are kept as they are (snake_case) so an operator can file the CSV
as it is. What a charger does not tell, we leave empty rather than guess: plug-in and
plug-out times (``plug_start_datetime``/``plug_end_datetime``) come from OCPP 2.0.1
stations' TransactionEvent trigger reasons (bridge.v201.transactions); an OCPP 1.6
transaction does not have them.
"""

from __future__ import annotations

import csv
import dataclasses
import io
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from chargetwin.database import Database
from rules.measurements import NORMAL_STOP_REASONS
from rules.points import NS, Selection
from rules.series import SeriesStore

POWER = "Power.Active.Import"

# OCPP 1.6 section 7.38 Reason → who ended the session (EV-ChART ``ended_by``).
ENDED_BY = {
    "Local": "customer",
    "EVDisconnected": "vehicle",
    "Remote": "operator",
    "DeAuthorized": "station",
    "EmergencyStop": "customer",
    "HardReset": "station",
    "SoftReset": "station",
    "PowerLoss": "station",
    "Reboot": "station",
    "UnlockCommand": "operator",
    "Other": "station",
}

CSV_FIELDS = (
    "session_id", "charger_id", "port_id", "connector_id", "plug_start_datetime",
    "plug_end_datetime", "charge_start_datetime", "charge_end_datetime", "session_duration",
    "energy_kwh", "peak_kw", "successful_completion", "error_code", "ended_by",
    "stop_reason", "id_tag",
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class Session:
    transaction_id: int
    charger_id: str
    connector_id: int
    id_tag: str
    meter_start: int
    started_at: float
    meter_stop: int | None
    stopped_at: float | None
    stop_reason: str | None
    peak_kw: float | None = None
    plug_start: float | None = None
    plug_end: float | None = None

    @property
    def energy_kwh(self) -> float | None:
        if self.meter_stop is None:
            return None
        return max(0.0, (self.meter_stop - self.meter_start) / 1000)

    @property
    def successful(self) -> bool | None:
        """EV-ChART successful_completion: energy delivered and a normal stop reason."""
        if self.stopped_at is None:
            return None
        energy = self.energy_kwh or 0.0
        return (self.stop_reason or "") in NORMAL_STOP_REASONS and energy > 0

    def record(self) -> dict[str, Any]:
        reason = self.stop_reason if self.stopped_at is not None else None
        return {
            "session_id": str(self.transaction_id),
            "charger_id": self.charger_id,
            "port_id": f"{self.charger_id}/{self.connector_id}",
            "connector_id": self.connector_id,
            "plug_start_datetime": _iso(self.plug_start),
            "plug_end_datetime": _iso(self.plug_end),
            "charge_start_datetime": _iso(self.started_at),
            "charge_end_datetime": _iso(self.stopped_at),
            "session_duration": (
                None
                if self.stopped_at is None
                else round((self.stopped_at - self.started_at) / 60, 3)
            ),
            "energy_kwh": None if self.energy_kwh is None else round(self.energy_kwh, 3),
            "peak_kw": None if self.peak_kw is None else round(self.peak_kw, 3),
            "successful_completion": self.successful,
            "error_code": reason if reason and reason not in NORMAL_STOP_REASONS else None,
            "ended_by": ENDED_BY.get(reason or "") if self.stopped_at else None,
            "stop_reason": reason,
            "id_tag": self.id_tag,
        }


def _iso(moment: float | None) -> str | None:
    if moment is None:
        return None
    return datetime.fromtimestamp(moment, UTC).isoformat().replace("+00:00", "Z")


_COLUMNS = (
    "transaction_id, charger_id, connector_id, id_tag, meter_start, started_at, meter_stop,"
    " stopped_at, stop_reason, plug_start, plug_end"
)


async def find_sessions(
    db: Database,
    *,
    charger_ids: Sequence[str] | None = None,
    connector_id: int | None = None,
    start: float | None = None,
    end: float | None = None,
    id_tag: str | None = None,
    stop_reason: str | None = None,
    limit: int = 100,
    offset: int = 0,
) -> tuple[list[Session], int]:
    """Sessions that started in ``[start, end)``, newest first, and how many match."""
    where: list[str] = []
    params: list[Any] = []
    if charger_ids is not None:
        if not charger_ids:
            return [], 0
        where.append(f"charger_id IN ({', '.join('?' for _ in charger_ids)})")
        params.extend(charger_ids)
    for clause, value in (("connector_id = ?", connector_id), ("started_at >= ?", start),
                          ("started_at < ?", end), ("id_tag = ?", id_tag),
                          ("stop_reason = ?", stop_reason)):  # fmt: skip
        if value is not None:
            where.append(clause)
            params.append(value)
    sql = (" WHERE " + " AND ".join(where)) if where else ""
    count = await db.fetchone("SELECT COUNT(*) FROM transactions" + sql, params)
    rows = await db.fetchall(
        f"SELECT {_COLUMNS} FROM transactions{sql}"
        " ORDER BY started_at DESC, transaction_id DESC LIMIT ? OFFSET ?",
        (*params, limit, offset),
    )
    sessions = [
        Session(int(r[0]), str(r[1]), int(r[2]), str(r[3]), int(r[4]), float(r[5]),
                None if r[6] is None else int(r[6]), None if r[7] is None else float(r[7]),
                r[8], None, _float_or_none(r[9]), _float_or_none(r[10]))
        for r in rows
    ]  # fmt: skip
    return sessions, int(count[0]) if count else 0


async def with_peaks(store: SeriesStore, sessions: Sequence[Session], now: float) -> list[Session]:
    """The sessions with ``peak_kw``: the highest ``Power.Active.Import`` sampled during
    each (W unless the unit says kW; OCPP 1.6 leaves the unit of Power to W by default)."""
    if not sessions:
        return []
    chargers = tuple(sorted({s.charger_id for s in sessions}))
    lo = min(s.started_at for s in sessions)
    hi = max(s.stopped_at or now for s in sessions)
    selection = Selection(
        "meter_values", "value", {"charger": chargers, "measurand": (POWER,)},
        ("charger", "connector", "unit"),
    )  # fmt: skip
    samples: dict[tuple[str, str], list[tuple[float, float]]] = defaultdict(list)
    for labels_t, points in (await store.points(selection, int(lo * NS) - 1, int(hi * NS))).items():
        labels = dict(labels_t)
        scale = 1.0 if labels.get("unit", "").lower() == "kw" else 0.001
        key = (labels["charger"], labels["connector"])
        samples[key].extend((t / NS, float(v) * scale) for t, v in points if isinstance(v, float))
    out = []
    for session in sessions:
        until = session.stopped_at or now
        during = [
            kw for t, kw in samples.get((session.charger_id, str(session.connector_id)), [])
            if session.started_at <= t <= until
        ]  # fmt: skip
        out.append(_replace_peak(session, max(during) if during else None))
    return out


def _replace_peak(session: Session, peak: float | None) -> Session:
    return dataclasses.replace(session, peak_kw=peak)


def _float_or_none(value: Any) -> float | None:
    return None if value is None else float(value)


def to_csv(rows: Iterable[dict[str, Any]], fields: Sequence[str]) -> str:
    """RFC 4180 CSV with a header; booleans as true/false, missing values empty."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(fields), extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: _cell(row.get(k)) for k in fields})
    return buffer.getvalue()


def _cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return value
