"""The allocator's rules on hand-worked cases (docs/sites.md) and its one invariant under
random sites: what is written plus what cannot be steered never passes the limit."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fleet.allocation import (
    RISE_A,
    SPARE_A,
    Connector,
    Policy,
    State,
    allocate,
    cap,
    equal_split,
    stage,
    targets,
    under_since,
)

NOW = 10_000.0


def charging(name: str, rated: float = 16.0, **kw: object) -> Connector:
    charger, _, port = name.partition("/")
    values: dict[str, object] = {"confirmed": kw.pop("confirmed", rated)}
    values.update(kw)
    return Connector(charger, port or "1", State.CHARGING, rated, **values)  # type: ignore[arg-type]


def test_equal_share_divides_the_limit_evenly() -> None:
    site = [charging("a"), charging("b"), charging("c")]
    out = targets(site, Policy(32.0), NOW)
    assert out == {"a/1": 10.666, "b/1": 10.666, "c/1": 10.666}


def test_equal_share_gives_what_one_cannot_take_to_the_others() -> None:
    # c draws 4 A of its offer since 2 minutes: capped at 4 + 2 = 6 A after the settle time
    c = charging("c", 32.0, measured=4.0, offered=16.0, under_since=NOW - 120)
    site = [charging("a", 32.0), charging("b", 32.0), c]
    assert cap(c, Policy(40.0), NOW) == 4.0 + SPARE_A
    assert targets(site, Policy(40.0), NOW) == {"a/1": 17.0, "b/1": 17.0, "c/1": 6.0}
    # before the settle time it keeps its share
    early = charging("c", 32.0, measured=4.0, offered=16.0, under_since=NOW - 30)
    assert targets([*site[:2], early], Policy(40.0), NOW)["c/1"] == pytest.approx(13.333, abs=1e-3)


def test_first_come_fills_the_earliest_session_first() -> None:
    site = [
        charging("late", started_at=300.0),
        charging("early", started_at=100.0),
        charging("mid", started_at=200.0),
    ]
    out = targets(site, Policy(32.0, strategy="first-come"), NOW)
    assert out == {"early/1": 16.0, "mid/1": 10.0, "late/1": 6.0}


def test_priority_fills_by_level_and_shares_equally_within_one() -> None:
    site = [
        charging("vip", priority=2, started_at=400.0),
        charging("b", priority=1, started_at=100.0),
        charging("c", priority=1, started_at=200.0),
        charging("low", priority=0, started_at=50.0),
    ]
    out = targets(site, Policy(40.0, strategy="priority"), NOW)
    assert out == {"vip/1": 16.0, "b/1": 9.0, "c/1": 9.0, "low/1": 6.0}


def test_below_the_minimum_the_latest_session_is_paused() -> None:
    site = [charging(f"c{i}", started_at=float(i)) for i in range(4)]
    allocation = allocate(site, Policy(20.0, strategy="first-come"), NOW)
    assert allocation.targets == {"c0/1": 8.0, "c1/1": 6.0, "c2/1": 6.0, "c3/1": 0.0}
    assert allocation.paused == ("c3/1",)


def test_equal_share_takes_turns_when_not_everyone_gets_the_minimum() -> None:
    policy = Policy(12.0, turn_s=900.0)
    ran_long = dict(offered=6.0, running_since=NOW - 1000)
    site = [
        charging("a", **ran_long),
        charging("b", offered=6.0, running_since=NOW - 100),
        charging("c", offered=0.0, paused_since=NOW - 1000),
    ]
    # a ran a full turn while c waited: c takes a's place, b keeps its own
    assert targets(site, policy, NOW) == {"a/1": 0.0, "b/1": 6.0, "c/1": 6.0}
    # nobody ran a full turn yet: the ones running stay
    fresh = [charging("a", offered=6.0, running_since=NOW - 10), *site[1:]]
    assert targets(fresh, policy, NOW) == {"a/1": 6.0, "b/1": 6.0, "c/1": 0.0}


def test_offline_and_refused_count_at_rated_or_failsafe() -> None:
    site = [
        Connector("gone", "1", State.OFFLINE, 32.0, failsafe=10.0),
        Connector("gone", "2", State.OFFLINE, 32.0, failsafe=10.0),  # one failsafe per charger
        Connector("stubborn", "1", State.REFUSED, 16.0, failsafe=6.0),  # ignores limits
        charging("a", confirmed=12.0),
        charging("b", confirmed=12.0),
    ]
    allocation = allocate(site, Policy(50.0), NOW)
    assert allocation.fixed == 26.0
    assert allocation.targets == {"a/1": 12.0, "b/1": 12.0}
    assert allocation.counted == 50.0 and allocation.headroom == 0.0
    # no failsafe confirmed: counted at the rated current of both ports
    bare = [Connector("gone", n, State.OFFLINE, 32.0) for n in "12"] + site[2:]
    assert allocate(bare, Policy(50.0), NOW).targets == {"a/1": 0.0, "b/1": 0.0}


def test_an_increase_waits_for_the_decrease_it_needs() -> None:
    a = charging("a", confirmed=16.0, offered=16.0)
    b = charging("b", confirmed=6.0, offered=6.0)
    written, counted = stage([a, b], {"a/1": 8.0, "b/1": 14.0}, 22.0)
    assert written == {"a/1": 8.0, "b/1": 6.0}  # b held until a confirmed 8 A
    assert counted == 22.0
    a_confirmed = charging("a", confirmed=8.0, offered=8.0)
    written, counted = stage([a_confirmed, b], {"a/1": 8.0, "b/1": 14.0}, 22.0)
    assert written == {"a/1": 8.0, "b/1": 14.0} and counted == 22.0


def test_the_reserve_keeps_the_minimum_free_for_the_next_sessions() -> None:
    def idle(name: str) -> Connector:
        return Connector(name, "1", State.IDLE, 32.0, confirmed=0.0)

    busy = [charging("a", 32.0), charging("b", 32.0)]
    # two idle connectors: 2 x 6 A kept free, the 28 A left shared
    policy = Policy(40.0, reserve_sessions=2)
    assert targets([*busy, idle("x"), idle("y")], policy, NOW)["a/1"] == 14.0
    # one idle connector: one session to come at most
    assert targets([*busy, idle("x")], policy, NOW)["a/1"] == 17.0
    # every connector charges: nothing to keep free
    assert targets(busy, policy, NOW)["a/1"] == 20.0
    # never at the cost of a charging connector's minimum: 3 x 6 A leave 2 A to keep
    three = [*busy, charging("c", 32.0), idle("x")]
    assert targets(three, Policy(20.0, reserve_sessions=2), NOW) == {
        "a/1": 6.0, "b/1": 6.0, "c/1": 6.0, "x/1": 0.0
    }  # fmt: skip
    # someone is paused: a new session would wait as well, nothing is kept back
    four = [*busy, charging("c", 32.0), charging("d", 32.0), idle("x")]
    assert sum(targets(four, Policy(21.0, reserve_sessions=2), NOW).values()) == 21.0
    with pytest.raises(ValueError, match="reserve"):
        Policy(10.0, reserve_sessions=-1)


def test_the_reserve_grows_with_the_site_and_stays_within_a_tenth_of_its_limit() -> None:
    assert Policy.reserve_for(6, 800.0, 6.0) == 2  # 2 at least
    assert Policy.reserve_for(100, 800.0, 6.0) == 5  # one per 20 connectors
    assert Policy.reserve_for(100, 120.0, 6.0) == 2  # 12 A: a tenth of the limit
    assert Policy.reserve_for(100, 100.0, 6.0) == 1
    assert Policy.reserve_for(6, 40.0, 6.0) == 0  # a small site keeps its current


def test_a_starting_session_gets_the_minimum_from_the_reserve_at_once() -> None:
    # 40 A, a and b at 14 A confirmed, 12 A kept free; x starts and y stays idle
    policy = Policy(40.0, reserve_sessions=2)
    a, b = (charging(n, 32.0, confirmed=14.0, offered=14.0) for n in "ab")
    x = Connector("x", "1", State.CHARGING, 32.0, confirmed=0.0, offered=0.0)
    y = Connector("y", "1", State.IDLE, 32.0, confirmed=0.0, offered=0.0)
    allocation = allocate([a, b, x, y], policy, NOW)
    assert allocation.targets == {"a/1": 11.333, "b/1": 11.333, "x/1": 11.333, "y/1": 0.0}
    # a and b decrease at once; x gets the 6 A minimum now (14 + 14 + 6 = 34 <= 40)
    # and its whole share (14 + 14 + 11.333 = 39.333 <= 40) as well: it fits the reserve
    assert allocation.limits["x/1"] == 11.333
    # a reserve for one session (a and b at 17 A): x gets the minimum now, the rest of its
    # share once a and b confirmed their decrease
    a, b = (charging(n, 32.0, confirmed=17.0, offered=17.0) for n in "ab")
    one = allocate([a, b, x, y], Policy(40.0, reserve_sessions=1), NOW)
    assert one.limits == {"a/1": 11.333, "b/1": 11.333, "x/1": 6.0, "y/1": 0.0}
    assert one.counted == 40.0


def test_a_starting_session_goes_before_the_increases_of_others() -> None:
    # c's session stopped (16 A not confirmed down yet), x starts: a and b want more too
    a = charging("a", confirmed=8.0, offered=8.0)
    b = charging("b", confirmed=8.0, offered=8.0)
    c = Connector("c", "1", State.IDLE, 16.0, confirmed=16.0, offered=0.0)
    x = Connector("x", "1", State.CHARGING, 16.0, confirmed=0.0, offered=0.0)
    wanted = {"a/1": 9.0, "b/1": 9.0, "c/1": 0.0, "x/1": 8.0}
    written, counted = stage([a, b, c, x], wanted, 38.0, minimum=6.0)
    # 6 A of room: x's minimum, not a's and b's 1 A each (smallest first as before)
    assert written == {"a/1": 8.0, "b/1": 8.0, "c/1": 0.0, "x/1": 6.0}
    assert counted == 38.0


def test_a_running_connector_s_small_increase_is_held() -> None:
    a = charging("a", confirmed=8.0, offered=8.0)
    b = charging("b", confirmed=8.0, offered=8.0)
    # a session stopped elsewhere: 0.4 A more each is not worth a profile
    assert stage([a, b], {"a/1": 8.4, "b/1": 8.4}, 40.0) == ({"a/1": 8.0, "b/1": 8.0}, 16.0)
    # from RISE_A up it is written
    up = 8.0 + RISE_A
    assert stage([a, b], {"a/1": up, "b/1": up}, 40.0) == ({"a/1": up, "b/1": up}, 2 * up)
    # a paused one resuming is not a small increase, whatever its bound
    paused = charging("p", confirmed=6.0, offered=0.0)
    assert stage([paused], {"p/1": 6.2}, 40.0)[0] == {"p/1": 6.2}


def test_unconfirmed_connectors_count_at_rated_until_confirmed() -> None:
    site = [charging("a", 32.0, confirmed=None), charging("b", 32.0, confirmed=None)]
    allocation = allocate(site, Policy(32.0), NOW)
    assert allocation.limits == {"a/1": 16.0, "b/1": 16.0}  # decreases: written at once
    assert allocation.counted == 64.0  # until the chargers confirm


def test_idle_connectors_get_nothing_and_a_slow_ev_is_tracked() -> None:
    site = [Connector("a", "1", State.IDLE, 32.0, confirmed=0.0), charging("b", 32.0)]
    assert targets(site, Policy(20.0), NOW) == {"a/1": 0.0, "b/1": 20.0}
    assert under_since(3.0, 16.0, None, NOW) == NOW
    assert under_since(3.0, 16.0, NOW - 50, NOW) == NOW - 50
    assert under_since(15.5, 16.0, NOW - 50, NOW) is None  # within the band: wants it all
    assert under_since(None, 16.0, NOW - 50, NOW) is None  # unknown draw: never capped


def test_a_capped_ev_keeps_its_cap_while_steady_and_regains_it_when_drawing() -> None:
    policy = Policy(64.0)
    # capped at 6 A (drawing 4): steady at 4 A it stays under by more than the band
    assert under_since(4.0, 4.0 + SPARE_A, NOW - 100, NOW) == NOW - 100
    # it draws up to its cap: the cap is lifted on the next pass
    assert under_since(5.5, 4.0 + SPARE_A, NOW - 100, NOW) is None
    lifted = charging("c", 32.0, measured=5.5, offered=6.0, under_since=None)
    assert cap(lifted, policy, NOW) == 32.0


def test_bad_policies_are_refused() -> None:
    with pytest.raises(ValueError, match="strategy"):
        Policy(10.0, strategy="round-robin")
    with pytest.raises(ValueError, match="minimum"):
        Policy(10.0, minimum=0.0)


def test_the_equal_split_baseline() -> None:
    assert equal_split([charging("a"), charging("b", 4.0)], 20.0) == {"a/1": 10.0, "b/1": 4.0}


connector_states = st.sampled_from(list(State))


@st.composite
def sites(draw: st.DrawFn) -> tuple[list[Connector], Policy]:
    count = draw(st.integers(1, 12))
    connectors = []
    for i in range(count):
        rated = draw(st.sampled_from([6.0, 10.0, 16.0, 32.0, 63.0]))
        confirmed = draw(st.none() | st.floats(0, rated))
        measured = draw(st.none() | st.floats(0, rated))
        connectors.append(
            Connector(
                f"c{i // 2}",
                str(i % 2 + 1),
                draw(connector_states),
                rated,
                phases=draw(st.sampled_from([1, 3])),
                confirmed=confirmed,
                pending=draw(st.none() | st.floats(0, rated)),
                failsafe=draw(st.none() | st.floats(0, 32)),
                measured=measured,
                offered=draw(st.none() | st.floats(0, rated)),
                under_since=draw(st.none() | st.floats(NOW - 600, NOW)),
                started_at=draw(st.none() | st.floats(0, NOW)),
                priority=draw(st.integers(0, 3)),
                running_since=draw(st.none() | st.floats(0, NOW)),
                paused_since=draw(st.none() | st.floats(0, NOW)),
            )
        )
    policy = Policy(
        draw(st.floats(0, 400)),
        minimum=draw(st.sampled_from([6.0, 8.0])),
        strategy=draw(st.sampled_from(["equal", "first-come", "priority"])),
        reserve_sessions=draw(st.integers(0, 3)),
    )
    return connectors, policy


@settings(max_examples=400, deadline=None)
@given(sites())
def test_never_more_than_the_limit(site: tuple[list[Connector], Policy]) -> None:
    connectors, policy = site
    allocation = allocate(connectors, policy, NOW)
    steered = {c.key: c for c in connectors if c.state not in (State.OFFLINE, State.REFUSED)}
    # the targets, once confirmed, fit beside what cannot be steered
    assert (
        allocation.fixed + sum(allocation.targets.values())
        <= max(policy.limit, allocation.fixed) + 1e-6
    )
    if allocation.fixed > policy.limit:
        assert not any(allocation.targets.values())
    # each charging connector gets the minimum or nothing
    for key, amps in allocation.targets.items():
        assert amps == 0.0 or amps >= policy.minimum - 1e-6
        assert amps <= steered[key].rated + 1e-6
    # while limits change, counting each at max(bound, written): never worse than before,
    # never over the limit when it was within before
    before = allocation.fixed + sum(c.bound for c in steered.values())
    during = allocation.fixed + sum(max(c.bound, allocation.limits[k]) for k, c in steered.items())
    assert during == pytest.approx(allocation.counted)
    assert during <= max(before, policy.limit) + 1e-6
