"""Bad input gets a clear CALLERROR and the connection stays; size and floods are limited."""

from __future__ import annotations

import asyncio
import json

import pytest
from conftest import MakeBridge, MqttWatcher, OpenCharger, RawCharger
from websockets.frames import CloseCode

from bridge.limits import FloodLimit

BOOT = {"chargePointVendor": "V", "chargePointModel": "M"}


async def still_usable(charger: RawCharger) -> None:
    assert "currentTime" in await charger.result("Heartbeat", {})


@pytest.mark.parametrize(
    ("frame", "answer_id", "code"),
    [
        ("this is not json", "-1", "FormationViolation"),
        ('[2, "u1", "Heartbeat", {}', "-1", "FormationViolation"),
        ('{"not": "an array"}', "-1", "ProtocolError"),
        ("[]", "-1", "ProtocolError"),
        ('[2, "u2", "Heartbeat"]', "u2", "ProtocolError"),
        ('[9, "u3", "Heartbeat", {}]', "u3", "PropertyConstraintViolation"),
        ('[2, "u4", "BootNotification", {"chargePointVendor": "V"}]', "u4", "ProtocolError"),
        (
            '[2, "u5", "BootNotification", {"chargePointVendor": 5, "chargePointModel": "M"}]',
            "u5",
            "TypeConstraintViolation",
        ),
        (
            '[2, "u6", "BootNotification", {"chargePointVendor": "V", "chargePointModel": "M",'
            ' "colour": "red"}]',
            "u6",
            "FormationViolation",
        ),
        (
            '[2, "u7", "StatusNotification", {"connectorId": 1, "errorCode": "NoError",'
            ' "status": "Sleeping"}]',
            "u7",
            "FormationViolation",
        ),
        ('[2, "u8", "MakeCoffee", {}]', "u8", "NotSupported"),
        ('[2, "u9", "Reset", {"type": "Hard"}]', "u9", "NotImplemented"),
        ('[2, "u10", "Heartbeat", "payload"]', "u10", "FormationViolation"),
    ],
)
async def test_malformed_frame_gets_a_callerror_and_the_connection_stays(
    open_charger: OpenCharger, frame: str, answer_id: str, code: str
) -> None:
    charger = await open_charger()
    answer = await charger.send_raw(frame, answer_id)
    assert answer[0] == 4, answer
    assert answer[1] == answer_id
    assert answer[2] == code
    assert isinstance(answer[3], str) and isinstance(answer[4], dict)
    await still_usable(charger)


async def test_a_late_or_unknown_callresult_is_ignored(open_charger: OpenCharger) -> None:
    charger = await open_charger()
    await charger.ws.send(json.dumps([3, "never-asked", {}]))
    await charger.ws.send(json.dumps([4, "never-asked", "GenericError", "", {}]))
    await still_usable(charger)


async def test_oversized_frame_closes_with_1009(
    make_bridge: MakeBridge, watcher: MqttWatcher, open_charger: OpenCharger
) -> None:
    charger = await open_charger()
    await still_usable(charger)
    big = json.dumps([2, "big", "DataTransfer", {"vendorId": "v", "data": "x" * 70_000}])
    await charger.ws.send(big)
    assert await charger.closed() == CloseCode.MESSAGE_TOO_BIG


@pytest.fixture
def flood_limit() -> FloodLimit:
    return FloodLimit(rate=20.0, burst=10, grace=0.5)


async def test_a_flooding_charger_is_refused_then_closed_and_others_are_served(
    make_bridge: MakeBridge,
    watcher: MqttWatcher,
    open_charger: OpenCharger,
    flood_limit: FloodLimit,
) -> None:
    bridge = await make_bridge(flood=flood_limit)
    flooder = await open_charger(target=bridge)
    calm = await open_charger(target=bridge)

    async def flood() -> list[str]:
        codes = []
        for i in range(10_000):
            if flooder.ws.close_code is not None:
                break
            unique_id = f"f{i}"
            future = flooder._expect(unique_id)
            try:
                await flooder.ws.send(json.dumps([2, unique_id, "Heartbeat", {}]))
            except Exception:
                break
            await asyncio.sleep(0.001)
            if future.done():
                answer = future.result()
                codes.append("ok" if answer[0] == 3 else f"{answer[2]}:{answer[3]}")
        return codes

    flooding = asyncio.create_task(flood())
    calm_answers = 0
    while not flooding.done():
        await still_usable(calm)
        calm_answers += 1
        await asyncio.sleep(0.05)
    codes = await flooding
    assert "ok" in codes
    assert "GenericError:rate limit" in codes
    assert await flooder.closed() == CloseCode.POLICY_VIOLATION
    assert calm_answers >= 3
    await still_usable(calm)
