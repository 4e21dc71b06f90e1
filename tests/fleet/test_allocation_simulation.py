"""The allocator over simulated hours (issue 12's acceptance case, at the allocator's level):
a site of 20 two-port chargers with a 100 A limit, 1,000 random session starts and stops,
EVs that take less than offered, chargers that confirm each new limit a few seconds late
and one that goes offline for a while. What the EVs really draw never passes the limit,
and every session is offered at least the minimum, or paused and then given its turn.

The chargers and EVs are a model (pure logic, as the allocator): a charger enforces the
last limit it confirmed (its rated current before any), an EV draws the lower of its own
demand and that limit. The real bridge and simulator are tested end to end elsewhere.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, replace

import pytest

from fleet.allocation import Connector, Policy, State, allocate, under_since

STEP_S = 5.0
LIMIT_A = 100.0
RATED_A = 32.0


@dataclass
class Port:
    connector: Connector
    demand: float = 0.0  # what the EV would take
    pending: list[tuple[float, float]] | None = None  # (confirmed at, limit)
    session_started: float | None = None
    served: bool = False  # offered current at least once in this session

    def draw(self) -> float:
        if self.connector.state is not State.CHARGING and self.session_started is None:
            return 0.0
        enforced = self.connector.confirmed if self.connector.confirmed is not None else RATED_A
        return min(self.demand, enforced)


@pytest.mark.parametrize("reserve", [0, 2])
@pytest.mark.parametrize("strategy", ["equal", "first-come", "priority"])
def test_a_busy_site_never_draws_more_than_its_limit(strategy: str, reserve: int) -> None:
    rng = random.Random(f"site-{strategy}-{reserve}")
    ports = [
        Port(Connector(f"CP{i // 2}", str(i % 2 + 1), State.IDLE, RATED_A, priority=i % 3))
        for i in range(40)
    ]
    policy = Policy(LIMIT_A, strategy=strategy, turn_s=600.0, reserve_sessions=reserve)
    now, events, worst, starts = 0.0, 0, 0.0, 0
    offline = {"CP3"}
    waited: list[float] = []
    # The first pass and its confirmations: every idle port at 0 A before any session.
    for step in range(4000):
        now += STEP_S
        charger_offline = 3600 <= now < 5400  # CP3 is cut off for half an hour
        if step > 2 and events < 1000 and rng.random() < 0.45:
            events += 1
            port = rng.choice(ports)
            if port.session_started is None:
                port.session_started, port.served = now, False
                port.demand = rng.choice([10.0, 16.0, 32.0])
                starts += 1
            else:
                if not port.served:
                    waited.append(now - port.session_started)
                port.session_started, port.demand = None, 0.0
        for port in ports:
            c = port.connector
            if port.session_started is not None and rng.random() < 0.002:
                port.demand = max(0.0, port.demand - 8.0)  # a battery nearly full: tapering
            while (
                port.pending
                and port.pending[0][0] <= now
                and not (charger_offline and c.charger_id in offline)
            ):  # the bridge sends one limit after the other: confirmed in order
                port.connector = c = replace(c, confirmed=port.pending[0][1])
                port.pending = port.pending[1:]
            c = port.connector = replace(
                c, pending=max((v for _, v in port.pending or []), default=None)
            )
            state = State.CHARGING if port.session_started is not None else State.IDLE
            if charger_offline and c.charger_id in offline:
                state = State.OFFLINE
            measured = port.draw()
            port.connector = replace(
                c, state=state, measured=measured, started_at=port.session_started,
                under_since=under_since(measured, c.offered, c.under_since, now),
            )  # fmt: skip
        total = sum(p.draw() for p in ports)
        if step > 10:  # once the first limits are confirmed
            assert total <= LIMIT_A + 1e-6, f"{total:.1f} A drawn at {now:.0f} s"
        worst = max(worst, total)
        allocation = allocate([p.connector for p in ports], policy, now)
        for port in ports:
            c = port.connector
            wanted = allocation.limits.get(c.key)
            target = allocation.targets.get(c.key)
            if c.state is State.CHARGING and target is not None:
                assert target == 0.0 or target >= policy.minimum
            if wanted is None or wanted == c.offered:
                continue
            running_since = c.running_since if wanted > 0 and (c.offered or 0) > 0 else (
                now if wanted > 0 else None
            )  # fmt: skip
            paused_since = None if wanted > 0 else (c.paused_since or now)
            port.connector = replace(
                c, offered=wanted, running_since=running_since, paused_since=paused_since
            )
            if wanted > 0 and port.session_started is not None:
                port.served = True
            delay = rng.choice([1, 2, 3]) * STEP_S  # the charger's answer comes late
            after = max([now + delay, *(at for at, _ in port.pending or [])])
            port.pending = [*(port.pending or []), (after, wanted)]
    assert events == 1000 and starts > 400
    assert worst > LIMIT_A * 0.8  # the site was busy: the limit mattered
    if strategy == "equal":
        # taking turns: nobody waited for current much longer than a turn and a bit
        assert max(waited, default=0.0) < 3 * policy.turn_s
