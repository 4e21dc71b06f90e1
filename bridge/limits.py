"""The per-charger flood limit: a token bucket plus "how long has it been over the limit".

One misbehaving charger must not starve the others of the event loop or of the database,
so every frame it sends takes a token; over the limit its calls are answered with a
CALLERROR, and if it keeps flooding for longer than a grace period it is disconnected.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class FloodLimit:
    """``rate`` frames per second sustained, ``burst`` at once, ``grace`` seconds over it."""

    rate: float = 50.0
    burst: int = 100
    grace: float = 5.0
    # A refusal less than ``quiet`` seconds ago keeps the charger "over the limit" even if
    # a refilled token lets one frame through, so a steady flood is not forgiven.
    quiet: float = 1.0


class TokenBucket:
    """Classic token bucket: ``capacity`` tokens, refilled at ``rate`` per second."""

    def __init__(
        self, rate: float, capacity: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if rate <= 0 or capacity < 1:
            raise ValueError("rate must be > 0 and capacity >= 1")
        self.rate = rate
        self.capacity = float(capacity)
        self._clock = clock
        self._tokens = float(capacity)
        self._updated = clock()

    def take(self) -> bool:
        """Take one token; False when the bucket is empty."""
        now = self._clock()
        self._tokens = min(self.capacity, self._tokens + (now - self._updated) * self.rate)
        self._updated = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        return False


class FloodGuard:
    """Admits frames of one connection and says when it has flooded for too long."""

    def __init__(self, limit: FloodLimit, clock: Callable[[], float] = time.monotonic) -> None:
        self.limit = limit
        self._clock = clock
        self._bucket = TokenBucket(limit.rate, limit.burst, clock)
        self._over_since: float | None = None
        self._last_refused = float("-inf")

    def admit(self) -> bool:
        """Take a token for one frame; False when the frame is over the limit."""
        now = self._clock()
        if self._bucket.take():
            if now - self._last_refused > self.limit.quiet:
                self._over_since = None
            return True
        self._last_refused = now
        if self._over_since is None:
            self._over_since = now
        return False

    @property
    def exhausted(self) -> bool:
        """True when the connection has been over the limit for longer than the grace."""
        return self._over_since is not None and self._clock() - self._over_since > self.limit.grace
