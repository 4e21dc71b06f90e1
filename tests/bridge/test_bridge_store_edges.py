"""Schema-valid edge values reach the transaction store of either database without an
InternalError: every integer the bridge accepts (signed 64 bits, bridge.frames) must fit
the column it is stored in."""

from __future__ import annotations

import asyncio

import pytest
from conftest import MakeBridge, MqttWatcher, OpenCharger

from bridge.stores import TransactionStore

INT64_MAX = 2**63 - 1


@pytest.mark.parametrize(
    "fields",
    [
        {"meterStart": INT64_MAX},
        {"meterStart": -(2**63)},
        {"meterStart": 0, "reservationId": 2**31 - 1},
        {"meterStart": 0, "reservationId": -(2**31)},
    ],
)
async def test_start_and_stop_transaction_with_64_bit_values(
    make_bridge: MakeBridge,
    watcher: MqttWatcher,
    open_charger: OpenCharger,
    database_url: str,
    fields: dict[str, int],
) -> None:
    bridge = await make_bridge(database_url=database_url)
    charger = await open_charger(target=bridge)
    start = {"connectorId": 1, "idTag": "t", "timestamp": "2024-01-01T00:00:00Z", **fields}
    answer = await charger.call("StartTransaction", start)
    assert answer[0] == 3, answer
    stop = {
        "transactionId": answer[2]["transactionId"],
        "meterStop": INT64_MAX,
        "timestamp": "2024-01-01T01:00:00Z",
    }
    assert (await charger.call("StopTransaction", stop))[0] == 3
    unknown = {"transactionId": INT64_MAX, "meterStop": 1, "timestamp": "2024-01-01T01:00:00Z"}
    assert (await charger.call("StopTransaction", unknown))[0] == 3


@pytest.mark.parametrize("reservation", [2**31, -(2**31) - 1, INT64_MAX])
async def test_a_reservation_id_no_column_holds_is_refused(
    make_bridge: MakeBridge,
    watcher: MqttWatcher,
    open_charger: OpenCharger,
    database_url: str,
    reservation: int,
) -> None:
    bridge = await make_bridge(database_url=database_url)
    charger = await open_charger(target=bridge)
    start = {
        "connectorId": 1,
        "idTag": "t",
        "timestamp": "2024-01-01T00:00:00Z",
        "meterStart": 0,
        "reservationId": reservation,
    }
    answer = await charger.call("StartTransaction", start)
    assert answer[2] == "PropertyConstraintViolation", answer


async def test_two_bridges_starting_many_transactions_at_once_each_get_an_id(
    database_url: str,
) -> None:
    """Two bridge processes on one database (scale-out): each start gets its own id at
    once, however many race (MAX + 1 made them collide until they gave up)."""
    from chargetwin.database import connect

    first, second = connect(database_url), connect(database_url)
    await first.open()
    await second.open()
    try:
        stores = [TransactionStore(first), TransactionStore(second)]
        await stores[0].create_schema()
        await stores[1].create_schema()
        started = await asyncio.gather(
            *(
                stores[i % 2].start(f"CP-{i % 40}", 1 + i % 2, f"TAG{i}", i, 1.7e9 + i)
                for i in range(200)
            )
        )
    finally:
        await first.close()
        await second.close()
    ids = [s.transaction_id for s in started]
    assert len(set(ids)) == 200 and not any(s.retried for s in started)


async def test_a_transactions_table_from_before_plug_times_gets_their_columns(
    database_url: str,
) -> None:
    """An installation upgraded from before plug-in / plug-out times: the bridge (and the
    API, which makes the same schema) adds the columns to the table it finds, once, and
    the plug times of its old and new sessions can be written and read."""
    from chargetwin.database import connect

    db = connect(database_url)
    await db.open()
    try:
        await db.execute(
            "CREATE TABLE transactions (transaction_id INTEGER PRIMARY KEY,"
            " charger_id TEXT NOT NULL, connector_id INTEGER NOT NULL, id_tag TEXT NOT NULL,"
            " meter_start BIGINT NOT NULL, started_at DOUBLE PRECISION NOT NULL,"
            " reservation_id INTEGER, meter_stop BIGINT, stopped_at DOUBLE PRECISION,"
            " stop_reason TEXT, stop_id_tag TEXT, created_at DOUBLE PRECISION NOT NULL,"
            " UNIQUE (charger_id, connector_id, id_tag, meter_start, started_at))"
        )
        await db.execute(
            "INSERT INTO transactions (transaction_id, charger_id, connector_id, id_tag,"
            " meter_start, started_at, created_at) VALUES (7, 'CP-1', 1, 'T', 0, 1.7e9, 1.7e9)"
        )
        store = TransactionStore(db)
        await store.create_schema()
        await TransactionStore(db).create_schema()  # the API of the same process: no error
        old = await store.get(7)
        assert old is not None and (old["plugStart"], old["plugEnd"]) == (None, None)
        await store.plugged("CP-1", 7, 1.7e9 + 30, None)
        await store.plugged("CP-1", 7, 1.7e9 + 90, 1.7e9 + 600)  # later plug-in: not it
        await store.plugged("CP-2", 7, 1.7e9 + 1, None)  # another charger's: ignored
        plugged = await store.get(7)
        assert plugged is not None
        assert (plugged["plugStart"], plugged["plugEnd"]) == (1.7e9 + 30, 1.7e9 + 600)
    finally:
        await db.close()
