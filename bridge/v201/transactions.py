"""OCPP 2.0.1 transactions: TransactionEvent into the same session records as 1.6.

A 2.0.1 station names its transactions itself (``transactionInfo.transactionId``, a string
of up to 36 characters) and numbers every TransactionEvent with ``seqNo``; it sends an
event again until it is answered, across reconnects, and events queued while it was
offline arrive later with ``offline: true`` (OCPP 2.0.1 E01-E07, E12).

Sessions stay in the bridge's ``transactions`` table (:class:`bridge.stores.TransactionStore`),
which the fleet's session records, EV-ChART CSV, KPIs and uptime read, so a 2.0.1 session
is counted exactly like a 1.6 one: the first event of a transaction starts a session (an
integer ``sessionId``, the table's ``transaction_id``), Ended stops it. The map from the
station's id to the session is ``transactions_201``; every event handled is
``transaction_events_201`` ``(charger, transactionId, seqNo)``, so an event sent again
(same seqNo) changes nothing and publishes nothing. The effects come before that row is
written (or in the same transaction) and are idempotent themselves (a start with the same
key returns the same session, a stop writes the same values), so a failure between them
loses nothing: the station sends the event again and it is applied again.

Plug-in and plug-out times: the time of the earliest event whose ``triggerReason`` is
CablePluggedIn or EVDetected (plug-in), EVCommunicationLost or EVDeparted (plug-out), in
the session's ``plug_start`` / ``plug_end`` (OCPP 2.0.1 TriggerReasonEnumType).

Energy: ``meterStart`` and ``meterStop`` are the ``Energy.Active.Import.Register`` readings
(Wh) of the first and last events that carry one (OCPP 2.0.1 SampledDataCtrlr
TxStartedMeasurands / TxEndedMeasurands); a transaction without any reading starts at 0.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from bridge.stores import TransactionStore
from bridge.v201.group_commit import GroupCommit
from chargetwin.database import Database, Params

SCHEMA = (
    """
CREATE TABLE IF NOT EXISTS transactions_201 (
    charger_id TEXT NOT NULL,
    transaction_id TEXT NOT NULL,
    session_id INTEGER NOT NULL,
    evse_id INTEGER,
    connector_id INTEGER,
    meter_start DOUBLE PRECISION,
    meter_last DOUBLE PRECISION,
    created_at DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (charger_id, transaction_id)
)
""",
    """
CREATE TABLE IF NOT EXISTS transaction_events_201 (
    charger_id TEXT NOT NULL,
    transaction_id TEXT NOT NULL,
    seq_no BIGINT NOT NULL,
    event_type TEXT NOT NULL,
    received_at DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (charger_id, transaction_id, seq_no)
)
""",
)

# TriggerReasonEnumType values that tell when the vehicle was plugged in and out (EV-ChART
# plug_start / plug_end). "EVConnected" is a ChargingState and TxStartPoint, not a trigger
# reason: a transaction that starts at plug-in says so with CablePluggedIn or EVDetected.
PLUG_IN_TRIGGERS = frozenset({"CablePluggedIn", "EVDetected"})
PLUG_OUT_TRIGGERS = frozenset({"EVCommunicationLost", "EVDeparted"})

ENERGY_REGISTER = "Energy.Active.Import.Register"
# OCPP 2.0.1 ReasonEnumType: stoppedReason "may only be omitted when the Reason is Local".
DEFAULT_STOPPED_REASON = "Local"
# OCPP 2.0.1 part 2, SampledValueType and UnitOfMeasureType defaults.
DEFAULT_MEASURAND = ENERGY_REGISTER
DEFAULT_CONTEXT = "Sample.Periodic"
DEFAULT_LOCATION = "Outlet"
DEFAULT_UNIT = "Wh"


@dataclass(frozen=True, slots=True)
class Session:
    """The session a station's transaction is recorded as."""

    session_id: int
    evse_id: int | None
    connector_id: int | None
    meter_start: float | None
    started_at: float
    id_tag: str


@dataclass(frozen=True, slots=True)
class Recorded:
    """What one TransactionEvent did: ``repeated`` (same seqNo seen: nothing done)."""

    repeated: bool
    session: Session | None = None
    started: bool = False  # this event started the session


def sample_value(sample: Mapping[str, Any]) -> dict[str, Any]:
    """A 2.0.1 SampledValue in the shape the bridge publishes for 1.6 (bridge.reports):
    the multiplier applied (value x 10^multiplier), defaults filled in."""
    unit_of_measure = sample.get("unitOfMeasure") or {}
    multiplier = unit_of_measure.get("multiplier", 0)
    measurand = sample.get("measurand") or DEFAULT_MEASURAND
    value = float(sample["value"]) * (10 ** int(multiplier))
    out: dict[str, Any] = {
        "measurand": measurand,
        "phase": sample.get("phase"),
        # Part 2, UnitOfMeasureType: "Wh" by default for an Energy measurand only (as 1.6).
        "unit": unit_of_measure.get("unit")
        or (DEFAULT_UNIT if measurand.startswith("Energy.") else None),
        "value": value,
        "context": sample.get("context") or DEFAULT_CONTEXT,
        "location": sample.get("location") or DEFAULT_LOCATION,
    }
    signed = sample.get("signedMeterValue")
    if isinstance(signed, Mapping):
        out["signedData"] = signed.get("signedMeterData")
    return out


def energy_wh(meter_values: Iterable[Mapping[str, Any]]) -> float | None:
    """The last whole-EVSE energy register reading in Wh (kWh converted), if any."""
    reading = None
    for meter_value in meter_values:
        for sample in meter_value.get("sampledValue") or ():
            converted = sample_value(sample)
            if converted["measurand"] != ENERGY_REGISTER or converted["phase"] is not None:
                continue
            if converted["location"] != DEFAULT_LOCATION:
                continue
            unit = str(converted["unit"])
            if unit == "Wh":
                reading = converted["value"]
            elif unit == "kWh":
                reading = converted["value"] * 1000.0
    return reading


class TransactionEvents:
    """``transactions_201`` and ``transaction_events_201`` over the shared database."""

    def __init__(self, db: Database, sessions: TransactionStore) -> None:
        self._db = db
        self._sessions = sessions
        # The last writes of each event, committed with other stations' (group_commit).
        self.commits = GroupCommit(db)

    async def create_schema(self) -> None:
        for statement in SCHEMA:
            await self._db.execute(statement)

    async def seen(self, charger_id: str, transaction_id: str, seq_no: int) -> bool:
        row = await self._db.fetchone(
            "SELECT 1 FROM transaction_events_201 WHERE charger_id = ? AND transaction_id = ?"
            " AND seq_no = ?",
            (charger_id, transaction_id, seq_no),
        )
        return row is not None

    async def session(self, charger_id: str, transaction_id: str) -> Session | None:
        found = await self._session_and_seen(charger_id, transaction_id, -1)
        return None if found is None else found[0]

    async def _session_and_seen(
        self, charger_id: str, transaction_id: str, seq_no: int
    ) -> tuple[Session, bool] | None:
        """The transaction's session and whether event ``seq_no`` of it was recorded, in
        one query (one round trip to the database per event, not two)."""
        row = await self._db.fetchone(
            "SELECT m.session_id, m.evse_id, m.connector_id, m.meter_start, t.started_at,"
            " t.id_tag, EXISTS (SELECT 1 FROM transaction_events_201 e"
            " WHERE e.charger_id = m.charger_id AND e.transaction_id = m.transaction_id"
            " AND e.seq_no = ?) FROM transactions_201 m JOIN transactions t"
            " ON t.transaction_id = m.session_id"
            " WHERE m.charger_id = ? AND m.transaction_id = ?",
            (seq_no, charger_id, transaction_id),
        )
        if row is None:
            return None
        session = Session(
            session_id=int(row[0]),
            evse_id=None if row[1] is None else int(row[1]),
            connector_id=None if row[2] is None else int(row[2]),
            meter_start=None if row[3] is None else float(row[3]),
            started_at=float(row[4]),
            id_tag=str(row[5]),
        )
        return session, bool(row[6])

    async def record(
        self,
        charger_id: str,
        event: Mapping[str, Any],
        at: float,
        *,
        exact_time: bool = True,
    ) -> Recorded:
        """Apply one TransactionEvent (camelCase payload) received at source time ``at``.

        Two round trips to the database for an event of a known transaction, and fewer
        when stations send at once: its session and seqNo are read in one query, its
        writes and its ``transaction_events_201`` row committed in one transaction
        (effects first) together with other events' (:mod:`bridge.v201.group_commit`).
        The first event of a transaction, a plug-in or plug-out and the last event take
        a few more.
        """
        info = event["transactionInfo"]
        transaction_id = str(info["transactionId"])
        seq_no = int(event["seqNo"])
        found = await self._session_and_seen(charger_id, transaction_id, seq_no)
        if found is not None and found[1]:
            return Recorded(True, found[0])
        if found is None and await self.seen(charger_id, transaction_id, seq_no):
            return Recorded(True, None)  # recorded, but its session is gone
        evse = event.get("evse") or {}
        evse_id = evse.get("id")
        connector_id = evse.get("connectorId")
        reading = energy_wh(event.get("meterValue") or ())
        id_token = (event.get("idToken") or {}).get("idToken")
        session = None if found is None else found[0]
        started = session is None
        writes: list[tuple[str, Params]] = []
        if session is None:
            # The first event of the transaction the bridge hears of starts the session
            # (normally Started; a station that began it before it knew this CSMS may
            # send Updated or Ended first). Idempotent: the same key gives the same id.
            begun = await self._sessions.start(
                charger_id,
                int(evse_id or 0),
                str(id_token or ""),
                round(reading or 0),
                at,
                event.get("reservationId"),
                exact_time=exact_time,
            )
            await self._db.execute(
                "INSERT INTO transactions_201 (charger_id, transaction_id, session_id, evse_id,"
                " connector_id, meter_start, meter_last, created_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                (
                    charger_id,
                    transaction_id,
                    begun.transaction_id,
                    evse_id,
                    connector_id,
                    reading,
                    reading,
                    time.time(),
                ),
            )
            session = await self.session(charger_id, transaction_id)
            assert session is not None  # just written, or by an identical earlier attempt
        else:
            if id_token and not session.id_tag:
                # A transaction that started at plug-in (TxStartPoint EVConnected, E02
                # "cable plugin first") is authorized by a later event: the token's session.
                writes.append(
                    (
                        "UPDATE transactions SET id_tag = ? WHERE transaction_id = ?"
                        " AND id_tag = ''",
                        (str(id_token), session.session_id),
                    )
                )
            if session.meter_start is None and reading is not None:
                # The first reading of a transaction that started without one: the session
                # counts energy from here, not from the register's 0.
                writes.append(
                    (
                        "UPDATE transactions SET meter_start = ? WHERE transaction_id = ?",
                        (round(reading), session.session_id),
                    )
                )
            writes.append(
                (
                    "UPDATE transactions_201 SET evse_id = COALESCE(evse_id, ?),"
                    " connector_id = COALESCE(connector_id, ?),"
                    " meter_start = COALESCE(meter_start, ?),"
                    " meter_last = COALESCE(?, meter_last)"
                    " WHERE charger_id = ? AND transaction_id = ?",
                    (evse_id, connector_id, reading, reading, charger_id, transaction_id),
                )
            )
        trigger = event.get("triggerReason")
        plugged = trigger in PLUG_IN_TRIGGERS or trigger in PLUG_OUT_TRIGGERS
        ended = event["eventType"] == "Ended"
        if plugged or ended:
            # Effects through the session store come after the writes above (the stop
            # reads meter_last) and before the event's row.
            if writes:
                await self._db.execute_batch(writes)
                writes = []
            if plugged:
                await self._sessions.plugged(
                    charger_id,
                    session.session_id,
                    at if trigger in PLUG_IN_TRIGGERS else None,
                    at if trigger in PLUG_OUT_TRIGGERS else None,
                )
            if ended:
                row = await self._db.fetchone(
                    "SELECT meter_last FROM transactions_201 WHERE charger_id = ?"
                    " AND transaction_id = ?",
                    (charger_id, transaction_id),
                )
                last = row[0] if row is not None and row[0] is not None else reading
                await self._sessions.stop(
                    charger_id,
                    session.session_id,
                    round(last if last is not None else session.meter_start or 0),
                    at,
                    str(info.get("stoppedReason") or DEFAULT_STOPPED_REASON),
                    None if id_token is None else str(id_token),
                )
        writes.append(
            (
                "INSERT INTO transaction_events_201 (charger_id, transaction_id, seq_no,"
                " event_type, received_at) VALUES (?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                (charger_id, transaction_id, seq_no, str(event["eventType"]), time.time()),
            )
        )
        await self.commits.write(writes)
        return Recorded(False, session, started)
