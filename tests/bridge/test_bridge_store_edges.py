"""Schema-valid edge values reach the transaction store of either database without an
InternalError: every integer the bridge accepts (signed 64 bits, bridge.frames) must fit
the column it is stored in."""

from __future__ import annotations

import pytest
from conftest import MakeBridge, MqttWatcher, OpenCharger

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
