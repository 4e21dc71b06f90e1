"""A charger's protocol errors, logged at a bounded rate.

A broken or hostile charger can send thousands of bad frames a second; a line with a
traceback for each one filled disks (a fuzz run wrote ~870 bytes per bad frame). Per
charger, the first error of a period is logged as it comes, the rest of the period is
counted and summed up in one line (with the last one) when the next error arrives after
the period or when the connection closes. Never a traceback: the charger's input is not
the bridge's defect. The one exception is a failure of the bridge's own code while
answering (InternalError), which is logged with its traceback, at the same bounded rate.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

log = logging.getLogger("bridge.protocol")

# One line per charger per minute at most, plus one summary line.
DEFAULT_PERIOD = 60.0
_LONGEST_LINE = 300


class ProtocolErrorLog:
    """Logs one charger's protocol errors: the first of each period, then a count."""

    __slots__ = ("_charger_id", "_clock", "_last", "_period", "_period_start", "_suppressed")

    def __init__(
        self,
        charger_id: str,
        period: float = DEFAULT_PERIOD,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._charger_id = charger_id
        self._period = period
        self._clock = clock
        self._period_start = float("-inf")
        self._suppressed = 0
        self._last = ""

    def error(self, what: str, *, internal: bool = False) -> None:
        """Note one error; ``internal`` adds the exception being handled (our defect)."""
        now = self._clock()
        if now - self._period_start < self._period:
            self._suppressed += 1
            self._last = what
            return
        self.flush()
        self._period_start = now
        line = _shorten(what)
        if internal:
            log.error("%s: %s", self._charger_id, line, exc_info=True)
        else:
            log.warning("%s: %s", self._charger_id, line)

    def flush(self) -> None:
        """Log the count of errors not logged yet (when the period ends or the socket closes)."""
        if self._suppressed:
            log.warning(
                "%s: %d more protocol errors in the last %.0f s; last: %s",
                self._charger_id,
                self._suppressed,
                min(self._period, self._clock() - self._period_start),
                _shorten(self._last),
            )
        self._suppressed = 0
        self._last = ""


_BREAKS = frozenset("\r\n\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029")


def _one_line(text: str) -> str:
    """``text`` with every line break escaped (as str.splitlines knows them)."""
    return "".join(repr(c)[1:-1] if c in _BREAKS else c for c in text)


def _shorten(text: str) -> str:
    text = _one_line(text)
    return text if len(text) <= _LONGEST_LINE else text[: _LONGEST_LINE - 3] + "..."


# The bridge's loggers whose lines a charger's own messages cause, one per event ("booted",
# "StopTransaction for unknown transaction", "unreadable timestamp"...): fine for a charger
# that behaves, a disk filler for one that sends the same message thousands of times.
CHARGER_LOGGERS = (
    "bridge.commands",
    "bridge.connections",
    "bridge.firmwares",
    "bridge.handlers",
    "bridge.reconcilers",
    "bridge.server",
    "bridge.times",
)


class ChargerLineBudget(logging.Filter):
    """At most ``lines`` lines per charger and logger per ``period``; the first line of the
    next period says how many were dropped. A line names its charger by the bridge's
    convention: the first argument of ``"%s: ..."``."""

    def __init__(
        self,
        lines: int = 20,
        period: float = DEFAULT_PERIOD,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__()
        self.lines = lines
        self.period = period
        self._clock = clock
        self._period_start = clock()
        # (logger, charger) -> [lines this period, dropped this period]; cleared each
        # period, so chargers long gone hold nothing.
        self._spent: dict[tuple[str, str], list[int]] = {}
        self._dropped_before: dict[tuple[str, str], int] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and any(type(a) is str and _BREAKS & set(a) for a in args):
            # A charger's text (vendor, model, security event...) must not start lines of
            # its own in the log.
            record.args = args = tuple(_one_line(a) if type(a) is str else a for a in args)
        if not (isinstance(args, tuple) and args and isinstance(args[0], str)):
            return True
        if not (isinstance(record.msg, str) and record.msg.startswith("%s: ")):
            return True
        now = self._clock()
        if now - self._period_start >= self.period:
            self._dropped_before = {k: v[1] for k, v in self._spent.items() if v[1]}
            self._spent = {}
            self._period_start = now
        key = (record.name, args[0])
        spent = self._spent.setdefault(key, [0, 0])
        if spent[0] >= self.lines:
            spent[1] += 1
            return False
        spent[0] += 1
        dropped = self._dropped_before.pop(key, 0)
        if dropped:
            record.msg = f"{record.msg} ({dropped} more such lines of this charger dropped)"
        return True


_BUDGET = ChargerLineBudget()


def limit_charger_lines() -> None:
    """Install the per-charger line budget on :data:`CHARGER_LOGGERS` (idempotent)."""
    for name in CHARGER_LOGGERS:
        logger = logging.getLogger(name)
        if _BUDGET not in logger.filters:
            logger.addFilter(_BUDGET)
