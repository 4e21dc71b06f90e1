"""Smart charging in the simulator: the profile stack and composite schedule (OCPP 1.6
sections 3.13, 5.5, 5.7, 5.16), the car's draw under it, and both over a real socket."""

from __future__ import annotations

import random
from dataclasses import replace
from typing import Any

import pytest
from ocpp.exceptions import NotSupportedError
from ocpp.v16 import call
from simulator_helpers import CentralSystem, fast_options, running

from simulator import ChargerModel, SessionTiming
from simulator.meters import Meter
from simulator.profiles import Limit, Profile, ProfileError, ProfileStore, iso_time

T0 = 1_765_000_000.0
RATING = Limit(32.0, 3)


def profile(
    pid: int,
    connector: int,
    purpose: str,
    level: int,
    periods: list[tuple[int, float]],
    *,
    unit: str = "A",
    kind: str = "Absolute",
    start: float | None = T0,
    **extra: Any,
) -> Profile:
    schedule: dict[str, Any] = {
        "chargingRateUnit": unit,
        "chargingSchedulePeriod": [{"startPeriod": s, "limit": v} for s, v in periods],
    }
    if start is not None:
        schedule["startSchedule"] = iso_time(start)
    if "duration" in extra:
        schedule["duration"] = extra.pop("duration")
    payload = {
        "chargingProfileId": pid,
        "stackLevel": level,
        "chargingProfilePurpose": purpose,
        "chargingProfileKind": kind,
        "chargingSchedule": schedule,
        **extra,
    }
    return Profile.parse(connector, payload, T0)


def test_the_lowest_of_the_stack_binds_and_tx_overrules_tx_default() -> None:
    store = ProfileStore()
    store.install(profile(1, 0, "ChargePointMaxProfile", 0, [(0, 20.0)]), {})
    store.install(profile(2, 0, "TxDefaultProfile", 0, [(0, 16.0)]), {})
    assert store.limit(1, T0 + 10) == Limit(16.0, 3)
    assert store.limit(0, T0 + 10) == Limit(20.0, 3)
    # A higher stack level of the same purpose wins, even when it allows more.
    store.install(profile(3, 1, "TxDefaultProfile", 1, [(0, 18.0)]), {})
    assert store.limit(1, T0 + 10) == Limit(18.0, 3)
    assert store.limit(2, T0 + 10) == Limit(16.0, 3)
    # A TxProfile overrules TxDefault for its transaction; the charger's cap still holds.
    with pytest.raises(ProfileError, match="no transaction"):
        store.install(profile(4, 1, "TxProfile", 0, [(0, 25.0)]), {})
    with pytest.raises(ProfileError, match="does not run"):
        store.install(profile(4, 1, "TxProfile", 0, [(0, 25.0)], transactionId=9), {1: 7})
    store.install(profile(4, 1, "TxProfile", 0, [(0, 25.0)], transactionId=7), {1: 7})
    assert store.limit(1, T0 + 10, tx_start=T0) == Limit(20.0, 3)
    assert store.limit(1, T0 + 10) == Limit(18.0, 3)  # no transaction: TxDefault
    store.transaction_ended(1)
    assert 4 not in store.profiles
    # Clearing by id; a new profile with the same id replaces the old one.
    store.install(profile(2, 0, "TxDefaultProfile", 0, [(0, 10.0)]), {})
    assert store.limit(2, T0 + 10) == Limit(10.0, 3)
    assert store.clear(profile_id=3) == 1 and store.clear(profile_id=3) == 0
    assert store.limit(1, T0 + 10) == Limit(10.0, 3)
    assert store.clear(purpose="ChargePointMaxProfile") == 1
    assert store.limit(0, T0) is None


def test_periods_validity_duration_and_units() -> None:
    store = ProfileStore()
    store.install(
        profile(
            1,
            0,
            "TxDefaultProfile",
            0,
            [(0, 16.0), (600, 0.0), (1200, 11_040.0)],
            unit="W",
            duration=3600,
            validTo=iso_time(T0 + 7200),
        ),
        {},
    )
    store.install(
        profile(2, 0, "TxDefaultProfile", 5, [(0, 8.0)], validFrom=iso_time(T0 + 5400)), {}
    )
    at = store.limit
    assert at(1, T0 - 1) is None  # before startSchedule
    assert at(1, T0 + 1) == Limit(16.0 / 690.0, 3)  # 16 W: next to nothing
    assert at(1, T0 + 700) == Limit(0.0, 3)  # a pause
    assert at(1, T0 + 1300) == Limit(16.0, 3)  # 11,040 W on 3 phases at 230 V
    assert at(1, T0 + 3700) is None  # after the duration
    assert at(1, T0 + 5500) == Limit(8.0, 3)  # the other profile, once valid
    schedule = store.composite(1, T0, 7200, "A", None, RATING)
    assert schedule["chargingSchedulePeriod"] == [
        {"startPeriod": 0, "limit": 0.0, "numberPhases": 3},
        {"startPeriod": 1200, "limit": 16.0, "numberPhases": 3},
        {"startPeriod": 3600, "limit": 32.0, "numberPhases": 3},
        {"startPeriod": 5400, "limit": 8.0, "numberPhases": 3},
    ]
    watts = store.composite(1, T0 + 1200, 600, "W", None, RATING)
    assert watts["chargingSchedulePeriod"] == [
        {"startPeriod": 0, "limit": 11_040.0, "numberPhases": 3}
    ]


def test_recurring_and_relative_profiles() -> None:
    store = ProfileStore()
    # Every day, 10 A for the first two hours from T0's time of day, then 32 A.
    daily = profile(
        1,
        0,
        "TxDefaultProfile",
        0,
        [(0, 10.0), (7200, 32.0)],
        kind="Recurring",
        recurrencyKind="Daily",
    )
    store.install(daily, {})
    assert store.limit(1, T0 + 86_400 + 60) == Limit(10.0, 3)
    assert store.limit(1, T0 + 86_400 + 7300) == Limit(32.0, 3)
    schedule = store.composite(1, T0 + 3600, 86_400, "A", None, RATING)
    assert [p["startPeriod"] for p in schedule["chargingSchedulePeriod"]] == [0, 3600, 82_800]
    relative = profile(2, 1, "TxProfile", 0, [(0, 6.0), (60, 12.0)], kind="Relative", start=None)
    store.install(relative, {1: 5})
    assert store.limit(1, T0 + 30, tx_start=T0) == Limit(6.0, 3)
    assert store.limit(1, T0 + 90, tx_start=T0) == Limit(12.0, 3)


def test_bad_profiles_are_refused_with_a_reason() -> None:
    with pytest.raises(ProfileError, match="start at 0"):
        profile(1, 0, "TxDefaultProfile", 0, [(5, 10.0)])
    with pytest.raises(ProfileError, match="increasing"):
        profile(1, 0, "TxDefaultProfile", 0, [(0, 10.0), (0, 8.0)])
    with pytest.raises(ProfileError, match="recurrencyKind"):
        profile(1, 0, "TxDefaultProfile", 0, [(0, 10.0)], kind="Recurring")
    with pytest.raises(ProfileError, match="connector 0"):
        ProfileStore().install(profile(1, 1, "ChargePointMaxProfile", 0, [(0, 10.0)]), {})
    store = ProfileStore(capacity=1)
    store.install(profile(1, 0, "TxDefaultProfile", 0, [(0, 10.0)]), {})
    with pytest.raises(ProfileError, match="already 1"):
        store.install(profile(2, 1, "TxDefaultProfile", 0, [(0, 10.0)]), {})


def profile_201(pid: int, purpose: str, level: int, limit: float, **extra: Any) -> dict[str, Any]:
    """An OCPP 2.0.1 ChargingProfileType (part 2, 2.10): ``id``, a list of schedules."""
    schedule = {
        "id": pid,
        "chargingRateUnit": "A",
        "chargingSchedulePeriod": [{"startPeriod": 0, "limit": limit, "numberPhases": 1}],
    }
    return {
        "id": pid,
        "stackLevel": level,
        "chargingProfilePurpose": purpose,
        "chargingProfileKind": "Absolute",
        "chargingSchedule": [schedule],
        **extra,
    }


def test_2_0_1_profiles_share_the_stack_with_string_transaction_ids() -> None:
    store = ProfileStore()
    cap = Profile.parse_201(0, profile_201(1000, "ChargingStationMaxProfile", 0, 20.0), T0)
    assert cap.purpose == "ChargePointMaxProfile" and cap.id == 1000
    store.install(cap, {})
    tx = profile_201(1001, "TxProfile", 1, 8.0, transactionId="cs-1-0000002A")
    # A TxProfile for a transaction that does not run on the EVSE is refused.
    with pytest.raises(ProfileError, match="does not run"):
        store.install(Profile.parse_201(1, tx, T0), {1: "cs-1-00000001"})
    store.install(Profile.parse_201(1, tx, T0), {1: "cs-1-0000002A"})
    assert store.limit(1, T0 + 1, tx_start=T0) == Limit(8.0, 1)
    assert store.limit(0, T0 + 1) == Limit(20.0, 1)
    store.transaction_ended(1)
    assert store.limit(1, T0 + 1) == Limit(20.0, 1)
    two = profile_201(1002, "TxDefaultProfile", 1, 6.0)
    two["chargingSchedule"] *= 2
    with pytest.raises(ProfileError, match="one charging schedule"):
        Profile.parse_201(2, two, T0)
    with pytest.raises(ProfileError, match="unknown purpose"):
        Profile.parse_201(0, profile_201(1000, "ChargePointMaxProfile", 0, 20.0), T0)


def test_the_car_ramps_up_follows_the_offer_and_tapers() -> None:
    rng = random.Random(1)
    meter = Meter(22_000.0, 3, 0.0)
    meter.plug_in(rng, ev_phases=1, ev_max_a=16.0)
    meter.soc = 50.0
    meter.advance(1.0, rng, True, None)
    assert 0 < meter.amps <= 10.0  # ramping up
    for _ in range(10):
        meter.advance(1.0, rng, True, None)
    assert 16.0 * 0.93 <= meter.amps <= 16.0  # the car's own limit, one phase
    assert meter.sample(["Current.Import"])["sampledValue"][0]["phase"] == "L1"
    assert len(meter.sample(["Current.Import"])["sampledValue"]) == 1
    meter.advance(1.0, rng, True, (10.0, 3))
    assert meter.amps <= 10.0  # drops at once
    meter.advance(1.0, rng, True, (5.0, 3))
    assert meter.amps == 0.0 and meter.power_w == 0.0  # below 6 A: paused
    # The register is the integral of the power reported: over an hour's step, between
    # the power before and after it (a ramp up counts half of its rise).
    meter.advance(1.0, rng, True, None)
    before, power = meter.energy_wh, meter.power_w
    meter.advance(3600.0, rng, True, None)
    low, high = sorted((power, meter.power_w))
    assert low - 1e-6 <= meter.energy_wh - before <= high + 1e-6
    assert meter.energy_wh - before == pytest.approx((power + meter.power_w) / 2)  # rose
    # A short session of one step still delivers energy (the ramp's share).
    short = Meter(22_000.0, 3, 0.0)
    short.plug_in(rng)
    short.soc = 20.0
    short.advance(0.0, rng, True, None)
    short.advance(1.5, rng, True, None)
    assert short.energy_wh > 0
    # Above 80 % the battery takes less.
    meter.soc = 95.0
    meter.advance(1.0, rng, True, None)
    assert meter.amps <= 16.0 * 0.25


async def test_profiles_over_a_socket_bind_the_car(central: CentralSystem) -> None:
    model = ChargerModel("ChargeTwin", "CT-AC22", "1.4.2", 2, 22_000.0, 3)
    timing = replace(fast_options("").sessions, duration_s=(30.0, 30.0))
    options = fast_options(central.url, models=(model,), sessions=timing)
    async with running(options) as fleet:
        charger = fleet.chargers[0]
        cid = charger.id
        await fleet.wait_for(booted=1, timeout=5)
        default = {
            "chargingProfileId": 1001,
            "stackLevel": 1,
            "chargingProfilePurpose": "TxDefaultProfile",
            "chargingProfileKind": "Absolute",
            "chargingSchedule": {
                "chargingRateUnit": "A",
                "chargingSchedulePeriod": [{"startPeriod": 0, "limit": 10.0, "numberPhases": 3}],
            },
        }
        answer = await central.call(cid, call.SetChargingProfile(1, default))
        assert answer.status == "Accepted"
        composite = await central.call(cid, call.GetCompositeSchedule(1, 600, "A"))
        assert composite.status == "Accepted"
        periods = composite.charging_schedule["charging_schedule_period"]
        assert [p["limit"] for p in periods] == [10.0]
        assert (await central.call(cid, call.RemoteStartTransaction(id_tag="T"))).status == (
            "Accepted"
        )

        def currents() -> list[float]:
            out = []
            for message in central.messages(cid, "MeterValues")[-1:]:
                for s in message["meterValue"][0]["sampledValue"]:
                    if s["measurand"] == "Current.Import":
                        out.append(float(s["value"]))
            return out

        await central.wait(lambda: len(currents()) == 3 and min(currents()) > 8.0, timeout=8)
        assert max(currents()) <= 10.0
        start = central.messages(cid, "StartTransaction")[0]
        assert start["connectorId"] == 1
        tx = {**default, "chargingProfilePurpose": "TxProfile", "transactionId": 1000}
        tx["chargingSchedule"] = {
            "chargingRateUnit": "A",
            "chargingSchedulePeriod": [{"startPeriod": 0, "limit": 7.0}],
        }
        assert (await central.call(cid, call.SetChargingProfile(1, tx))).status == "Accepted"
        await central.wait(lambda: 0 < max(currents()) <= 7.0, timeout=5)
        tx["chargingSchedule"]["chargingSchedulePeriod"][0]["limit"] = 0.0
        assert (await central.call(cid, call.SetChargingProfile(1, tx))).status == "Accepted"
        await central.wait(lambda: max(currents()) == 0.0, timeout=5)
        cleared = await central.call(cid, call.ClearChargingProfile(id=1001))
        assert cleared.status == "Accepted"
        assert (await central.call(cid, call.ClearChargingProfile(id=1001))).status == "Unknown"
        # TxProfile 1001 replaced TxDefault 1001 (same id); nothing binds the car now.
        await central.wait(lambda: min(currents()) > 20.0, timeout=8)
        # A model without smart charging.
        charger.profile_answer = "NotSupported"
        refused = await central.call(cid, call.SetChargingProfile(1, default))
        assert refused.status == "NotSupported"
        charger.profile_answer = "CallError"
        with pytest.raises(NotSupportedError):
            await central.call(cid, call.SetChargingProfile(1, default))


def test_default_sessions_unchanged() -> None:
    """Without an EV mix a car takes all the charger gives (older runs stay comparable)."""
    assert SessionTiming().auto_sessions
    meter = Meter(7_360.0, 1, 0.0)
    rng = random.Random(3)
    meter.plug_in(rng)
    for _ in range(10):
        meter.advance(1.0, rng, True, None)
    assert 0.9 * 7_360.0 < meter.power_w <= 7_360.0
