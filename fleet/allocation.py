"""Dividing a site's current limit among its connectors: pure functions, no stores, no clock.

The engine (:mod:`fleet.energy`) gathers what it knows of every connector of a site and
calls :func:`allocate`; every rule here can be checked by hand (docs/sites.md works the
examples through). All currents are amperes per phase; a single-phase connector is counted
as loading every phase of the site (the safe side: which phase it is wired to is unknown).

How missing information is counted (issue 12: the sum must never pass the limit because of
something the platform does not know):

* ``offline`` connectors and ``refused`` ones cannot be steered: they are *fixed*, counted at
  their rated current, an offline charger's at most its confirmed failsafe limit (the
  ChargePointMaxProfile it keeps without the platform). A refusal counts at the full
  rated current, as the charger showed it does not obey.
* Every other connector is steered, but until the charger confirmed a limit for it, it is
  bounded only by its rated current (or the charger's confirmed failsafe): its *bound*.
  Once confirmed, the bound is the confirmed limit, or a higher one written since and not
  yet superseded (``pending``: it may still land).
  A new limit below the bound is safe at once; one above it is written only while the site
  stays within its limit counting each connector at the higher of its bound and its new
  limit (decreases first, increases when the decreases are confirmed: :func:`stage`).

Reaction time: a new session would wait for the decreases of the others to be written and
confirmed before its share could be written (seconds on a busy site, chained across
overlapping starts), so:

* the site keeps a *reserve*: the minimum current for the next ``reserve_sessions``
  sessions (:meth:`Policy.reserve_for`; at most as many as there are idle connectors,
  never at the cost of a charging connector's minimum) is left out of the shares;
* a *starting* connector (bound below the minimum, share at least the minimum) is staged
  before the others' increases and given at least the minimum as soon as it fits (the
  reserve), the rest of its share once the decreases it needs are confirmed;
* a running connector's increase below ``RISE_A`` is held (not written): a start or a
  stop moves everyone's equal share a little, and a profile to every charger for each
  would keep the chargers and the bridge busy (and every new session waiting behind).

Strategies, for the connectors that charge (``idle`` ones get 0 A):

* ``equal``: the same current for all, more for none than it can take (water filling).
* ``first-come``: everyone admitted gets the minimum, what is left goes to the earliest
  session first.
* ``priority``: as first-come, highest priority first; equal share among equal priorities.

When the budget cannot give every charging connector the minimum, some are paused (0 A):
``first-come`` and ``priority`` pause the latest and lowest; ``equal`` takes turns, so a
connector that ran ``turn_s`` while another waited gives its place up.

Unused allocation (an EV drawing less than offered, a full battery) goes to the others once
the connector drew at least ``UNDER_A`` less than offered for ``settle_s``: its cap becomes
what it draws plus ``SPARE_A``. It gets its full share back as soon as it draws within
``UNDER_A`` of its cap. The cap is above the draw by more than the band, so a steady EV
neither loses nor regains its cap on the next pass: no oscillation.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum

STRATEGIES = ("equal", "first-come", "priority")
DEFAULT_MINIMUM_A = 6.0  # IEC 61851-1: the lowest current a PWM signal may offer
UNDER_A = 1.0  # an EV drawing this much less than offered is not using its share
SPARE_A = 2.0  # a capped EV is offered this much above what it draws
# A running connector's increase smaller than this is held: every session that starts or
# stops moves everyone's equal share a little, and a profile per charger for each would
# keep the chargers busy with changes of a few hundredths of an ampere (the next start
# takes them back anyway).
RISE_A = 0.5
DEFAULT_SETTLE_S = 60.0
# The reserve (module docstring): for 2 sessions, or one per 20 connectors on a larger site
# where more sessions start within one pass, but never more than a tenth of the limit, so
# a small site keeps its current for the sessions it has.
RESERVE_SESSIONS = 2
CONNECTORS_PER_RESERVE = 20
RESERVE_SHARE = 0.1
DEFAULT_TURN_S = 900.0
_EPS = 1e-9


class State(StrEnum):
    CHARGING = "charging"  # a transaction runs on it
    IDLE = "idle"  # no transaction
    OFFLINE = "offline"  # its charger is not connected: it keeps what it had
    REFUSED = "refused"  # the charger refused its charging limit


FIXED = frozenset({State.OFFLINE, State.REFUSED})


@dataclass(frozen=True, slots=True)
class Connector:
    """What the engine knows of one connector. ``key`` is ``"charger/connector"``."""

    charger_id: str
    connector: str
    state: State
    rated: float  # A per phase the connector can deliver at most
    phases: int = 3
    confirmed: float | None = None  # the limit its charger confirmed; None: none yet
    # The highest limit written since the charger last confirmed the latest one: a write
    # still on its way may land before the next one (the bridge applies them in order).
    pending: float | None = None
    failsafe: float | None = None  # its charger's confirmed failsafe limit, if any
    measured: float | None = None  # A per phase drawn now (highest phase); None: unknown
    offered: float | None = None  # the limit last written for it
    under_since: float | None = None  # since when it draws >= UNDER_A below ``offered``
    started_at: float | None = None  # the session's start (first-come order)
    priority: int = 0
    running_since: float | None = None  # since when it gets current (equal: turns)
    paused_since: float | None = None  # since when it is paused (equal: turns)

    @property
    def key(self) -> str:
        return f"{self.charger_id}/{self.connector}"

    @property
    def bound(self) -> float:
        """The most it may draw before a new limit is confirmed."""
        ceiling = self.rated if self.failsafe is None else min(self.rated, self.failsafe)
        if self.state is State.REFUSED:
            return self.rated
        if self.confirmed is None or self.state is State.OFFLINE:
            return ceiling
        return min(ceiling, max(self.confirmed, self.pending or 0.0))


@dataclass(frozen=True, slots=True)
class Policy:
    """A site's rules at one moment (the schedule already applied to ``limit``)."""

    limit: float  # A per phase
    minimum: float = DEFAULT_MINIMUM_A
    strategy: str = "equal"
    settle_s: float = DEFAULT_SETTLE_S
    turn_s: float = DEFAULT_TURN_S
    # The minimum current kept free for this many sessions to come (module docstring).
    reserve_sessions: int = 0

    def __post_init__(self) -> None:
        if self.strategy not in STRATEGIES:
            raise ValueError(f"unknown strategy {self.strategy!r}; one of {', '.join(STRATEGIES)}")
        if not self.limit >= 0 or not self.minimum > 0:
            raise ValueError("the limit must be >= 0 A and the minimum > 0 A")
        if self.reserve_sessions < 0:
            raise ValueError("the reserve must be for 0 or more sessions")

    @staticmethod
    def reserve_for(connectors: int, limit: float, minimum: float) -> int:
        """How many sessions a site of ``connectors`` keeps the minimum free for (see the
        constants above): ``RESERVE_SESSIONS`` or one per ``CONNECTORS_PER_RESERVE``
        connectors, at most as many minimums as ``RESERVE_SHARE`` of the limit holds."""
        wanted = max(RESERVE_SESSIONS, math.ceil(connectors / CONNECTORS_PER_RESERVE))
        return max(0, min(wanted, int(limit * RESERVE_SHARE / minimum + 1e-9)))


@dataclass(frozen=True, slots=True)
class Allocation:
    """The outcome for a site: ``targets`` (where the allocator wants each steered
    connector), ``limits`` (what to write now: see :func:`stage`), and the accounting."""

    targets: dict[str, float]
    limits: dict[str, float]
    fixed: float  # A counted for offline and refused connectors
    counted: float  # fixed + every steered connector at max(bound, written limit)
    limit: float
    paused: tuple[str, ...] = field(default=())

    @property
    def headroom(self) -> float:
        return self.limit - self.counted


def cap(connector: Connector, policy: Policy, now: float) -> float:
    """The most this connector should be offered: its rated current (at most its charger's
    failsafe, a ChargePointMaxProfile that caps the charger online too), or (an EV that has
    not used its offer for ``settle_s``) what it draws plus ``SPARE_A``."""
    ceiling = connector.rated
    if connector.failsafe is not None:
        ceiling = min(ceiling, max(connector.failsafe, policy.minimum))
    if (
        connector.measured is not None
        and connector.under_since is not None
        and now - connector.under_since >= policy.settle_s
    ):
        return min(ceiling, max(policy.minimum, connector.measured + SPARE_A))
    return ceiling


def under_since(
    measured: float | None, offered: float | None, previous: float | None, now: float
) -> float | None:
    """Track when a connector started drawing ``UNDER_A`` below its offer (None: it is
    not, or its draw is unknown): the input of :func:`cap`'s settle time."""
    if measured is None or offered is None or offered <= 0 or measured > offered - UNDER_A:
        return None
    return now if previous is None else previous


def _fill(amounts: dict[str, float], caps: Mapping[str, float], budget: float) -> float:
    """Raise ``amounts`` by equal increments (water filling) up to ``caps``; returns the
    budget left. Sorted by room, so one pass: O(n log n)."""
    keys = sorted(amounts, key=lambda k: caps[k] - amounts[k])
    for i, k in enumerate(keys):
        if budget <= _EPS:
            break
        share = budget / (len(keys) - i)
        room = max(0.0, caps[k] - amounts[k])
        if room <= share:
            amounts[k] += room
            budget -= room
        else:
            for rest in keys[i:]:
                amounts[rest] += share
            return 0.0
    return max(0.0, budget)


def _order(charging: Sequence[Connector], policy: Policy, now: float) -> list[Connector]:
    """Who gets a place first when not every charging connector can get the minimum."""

    def start(c: Connector) -> float:
        return math.inf if c.started_at is None else c.started_at

    if policy.strategy == "first-come":
        return sorted(charging, key=lambda c: (start(c), c.key))
    if policy.strategy == "priority":
        return sorted(charging, key=lambda c: (-c.priority, start(c), c.key))

    # equal: turns. Those that ran less than a turn keep their place, then those waiting
    # longest, then those that ran a full turn (most recently resumed first).
    def turn(c: Connector) -> tuple[int, float, str]:
        if c.running_since is not None and (c.offered or 0) > 0:
            ran = now - c.running_since
            if ran < policy.turn_s:
                return (0, c.running_since, c.key)
            return (2, -c.running_since, c.key)
        waiting = c.paused_since if c.paused_since is not None else min(start(c), now)
        return (1, waiting, c.key)

    return sorted(charging, key=turn)


def targets(connectors: Iterable[Connector], policy: Policy, now: float) -> dict[str, float]:
    """The limit the strategy gives each steered connector, ignoring confirmations."""
    connectors = list(connectors)
    fixed = sum(_fixed_load(connectors).values())
    budget = max(0.0, policy.limit - fixed)
    out = {c.key: 0.0 for c in connectors if c.state not in FIXED}
    charging = [c for c in connectors if c.state is State.CHARGING and c.rated >= policy.minimum]
    admitted = _order(charging, policy, now)[: int((budget + _EPS) // policy.minimum)]
    if not admitted:
        return out
    caps = {c.key: cap(c, policy, now) for c in admitted}
    amounts = {c.key: policy.minimum for c in admitted}
    budget -= policy.minimum * len(admitted)
    budget -= reserve(connectors, policy, budget, paused=len(admitted) < len(charging))
    if policy.strategy == "equal":
        _fill(amounts, caps, budget)
    elif policy.strategy == "first-come":
        for c in admitted:
            room = min(budget, caps[c.key] - amounts[c.key])
            amounts[c.key] += room
            budget -= room
    else:
        for level in sorted({c.priority for c in admitted}, reverse=True):
            group = {c.key: amounts[c.key] for c in admitted if c.priority == level}
            budget = _fill(group, caps, budget)
            amounts.update(group)
    # Down to the milliamp (never up: the sum stays within the budget).
    out.update({k: math.floor(v * 1000 + 1e-6) / 1000 for k, v in amounts.items()})
    return out


def reserve(connectors: Sequence[Connector], policy: Policy, left: float, paused: bool) -> float:
    """The current kept out of the shares so that the next sessions get the minimum at once:
    ``policy.minimum`` for each of the next ``reserve_sessions`` sessions, no more than the
    idle connectors that could start one, out of ``left`` (the budget once every admitted
    connector has its minimum). None while a session is paused: a new one would wait too."""
    if paused or policy.reserve_sessions == 0:
        return 0.0
    idle = sum(1 for c in connectors if c.state is State.IDLE and c.rated >= policy.minimum)
    return max(0.0, min(left, policy.minimum * min(policy.reserve_sessions, idle)))


def _fixed_load(connectors: Sequence[Connector]) -> dict[str, float]:
    """Per charger: what its offline and refused connectors are counted at."""
    refused: dict[str, float] = {}
    offline: dict[str, float] = {}
    failsafe: dict[str, float | None] = {}
    for c in connectors:
        if c.state is State.REFUSED:
            refused[c.charger_id] = refused.get(c.charger_id, 0.0) + c.rated
        elif c.state is State.OFFLINE:
            offline[c.charger_id] = offline.get(c.charger_id, 0.0) + c.rated
            failsafe[c.charger_id] = c.failsafe
    out = dict(refused)
    for charger_id, load in offline.items():
        limit = failsafe[charger_id]
        out[charger_id] = out.get(charger_id, 0.0) + (load if limit is None else min(load, limit))
    return out


def stage(
    connectors: Sequence[Connector],
    wanted: Mapping[str, float],
    limit: float,
    minimum: float = DEFAULT_MINIMUM_A,
) -> tuple[dict[str, float], float]:
    """What to write now so the site stays within ``limit`` while limits change.

    Until a charger confirms a new limit it may draw up to the higher of its old bound and
    the new limit. Decreases are always written. Increases are written only while the
    fixed load plus every steered connector at max(bound, written) fits: first the
    *starting* connectors (bound below ``minimum``, a share of at least ``minimum``) get
    ``minimum`` each, then every increase (smallest first) gets its whole share if it fits;
    a running connector's increase below ``RISE_A`` is held. A starting connector that got
    only the minimum has the rest on a later pass; another held increase keeps the limit
    last written, capped at the bound, and is tried again on the next pass (when the
    decreases are confirmed). Returns the limits and the count.
    """
    fixed = sum(_fixed_load(connectors).values())
    steered = [c for c in connectors if c.state not in FIXED and c.key in wanted]
    written: dict[str, float] = {}
    counted = fixed
    rising: list[Connector] = []
    for c in steered:
        counted += c.bound
        if wanted[c.key] <= c.bound + _EPS:
            written[c.key] = wanted[c.key]
        else:
            rising.append(c)
    rising.sort(key=lambda c: (wanted[c.key] - c.bound, c.key))
    granted: dict[str, float] = {}  # the starting connectors' minimum, once it fits
    for c in rising:
        if c.bound < minimum <= wanted[c.key] and counted + minimum - c.bound <= limit + _EPS:
            granted[c.key] = minimum
            counted += minimum - c.bound
    for c in rising:
        base = granted.get(c.key, c.bound)
        extra = wanted[c.key] - base
        running = c.key not in granted and min(c.bound, c.offered or 0.0) >= minimum
        if counted + extra <= limit + _EPS and not (running and extra < RISE_A - _EPS):
            written[c.key] = wanted[c.key]
            counted += extra
        elif c.key in granted:
            written[c.key] = granted[c.key]
        else:
            held = c.offered if c.offered is not None else 0.0
            written[c.key] = min(held, c.bound)
    return written, counted


def allocate(connectors: Sequence[Connector], policy: Policy, now: float) -> Allocation:
    """One pass for one site: targets by the strategy, then the safe limits to write."""
    wanted = targets(connectors, policy, now)
    limits, counted = stage(connectors, wanted, policy.limit, policy.minimum)
    paused = tuple(
        c.key for c in connectors if c.state is State.CHARGING and wanted.get(c.key, 0.0) == 0.0
    )
    fixed = sum(_fixed_load(connectors).values())
    return Allocation(wanted, limits, fixed, counted, policy.limit, paused)


def equal_split(connectors: Sequence[Connector], limit: float) -> dict[str, float]:
    """The trivial baseline: the limit divided evenly among charging connectors."""
    charging = [c for c in connectors if c.state is State.CHARGING]
    share = limit / len(charging) if charging else 0.0
    return {c.key: min(c.rated, share) for c in charging}


def settled(connector: Connector, now: float) -> Connector:
    """The connector with its draw tracking advanced to ``now`` (see :func:`under_since`)."""
    since = under_since(connector.measured, connector.offered, connector.under_since, now)
    return replace(connector, under_since=since)
