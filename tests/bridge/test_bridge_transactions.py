"""Transactions are stored durably and idempotently (SQLite and PostgreSQL)."""

from __future__ import annotations

import asyncio
import time

from conftest import MakeBridge, MqttWatcher, OpenCharger

from bridge.stores import TransactionStore
from bridge.times import iso_time
from chargetwin.database import connect

T0 = float(int(time.time()) - 7200)  # a plausible charger time (bridge.times)

START = {
    "connectorId": 1,
    "idTag": "TAG-1",
    "meterStart": 1000,
    "timestamp": iso_time(T0),
}


async def test_start_and_stop_are_idempotent_and_durable(
    make_bridge: MakeBridge,
    watcher: MqttWatcher,
    open_charger: OpenCharger,
    database_url: str,
) -> None:
    bridge = await make_bridge(database_url=database_url)
    charger = await open_charger(target=bridge)

    first = await charger.result("StartTransaction", START)
    assert first["idTagInfo"] == {"status": "Accepted"}
    retried = await charger.result("StartTransaction", START)
    assert retried["transactionId"] == first["transactionId"]
    other = await charger.result("StartTransaction", {**START, "connectorId": 2})
    assert other["transactionId"] != first["transactionId"]

    stop = {
        "transactionId": first["transactionId"],
        "meterStop": 5400,
        "idTag": "TAG-1",
        "timestamp": iso_time(T0 + 3600),
        "reason": "EVDisconnected",
        "transactionData": [
            {
                "timestamp": iso_time(T0 + 3600),
                "sampledValue": [
                    {"value": "5400", "context": "Transaction.End"},
                ],
            }
        ],
    }
    assert await charger.result("StopTransaction", stop) == {"idTagInfo": {"status": "Accepted"}}
    assert await charger.result("StopTransaction", stop) == {"idTagInfo": {"status": "Accepted"}}

    base = bridge.topics.charger(charger.charger_id)
    events = f"{base}/events/transaction"
    await watcher.wait_for(events, lambda e: e["event"] == "stopped")
    started = [e for e in watcher.on(events) if e["event"] == "started"]
    assert [e["retried"] for e in started] == [False, True, False]
    stopped = next(e for e in watcher.on(events) if e["event"] == "stopped")
    assert stopped["meterStart"] == 1000 and stopped["meterStop"] == 5400
    assert stopped["reason"] == "EVDisconnected" and stopped["idTag"] == "TAG-1"
    end = await watcher.wait_for(
        f"{base}/telemetry/meterValues", lambda m: m["values"][0]["context"] == "Transaction.End"
    )
    assert end["transactionId"] == first["transactionId"] and end["connectorId"] == 1

    # Durable: a fresh connection to the same database sees the stored transaction.
    db = connect(database_url)
    await db.open()
    try:
        row = await TransactionStore(db).get(first["transactionId"])
    finally:
        await db.close()
    assert row is not None
    assert (row["chargerId"], row["meterStart"], row["meterStop"], row["stopReason"]) == (
        charger.charger_id,
        1000,
        5400,
        "EVDisconnected",
    )


async def test_stop_without_id_tag_and_reason_uses_the_spec_default(
    make_bridge: MakeBridge, watcher: MqttWatcher, open_charger: OpenCharger
) -> None:
    bridge = await make_bridge()
    charger = await open_charger(target=bridge)
    started = await charger.result("StartTransaction", START)
    stop = {
        "transactionId": started["transactionId"],
        "meterStop": 1500,
        "timestamp": iso_time(T0 + 1800),
    }
    assert await charger.result("StopTransaction", stop) == {}
    events = f"{bridge.topics.charger(charger.charger_id)}/events/transaction"
    stopped = await watcher.wait_for(events, lambda e: e["event"] == "stopped")
    assert stopped["reason"] == "Local"


async def test_concurrent_starts_get_distinct_ids(database_url: str) -> None:
    db = connect(database_url)
    await db.open()
    try:
        store = TransactionStore(db)
        await store.create_schema()
        results = await asyncio.gather(
            *[store.start("cp-a", 1, f"TAG-{i}", i, 1000.0 + i) for i in range(12)]
        )
        again = await store.start("cp-a", 1, "TAG-3", 3, 1003.0)
    finally:
        await db.close()
    ids = [r.transaction_id for r in results]
    assert len(set(ids)) == 12
    assert again.retried and again.transaction_id == ids[3]
