"""Shared definitions of the API's parameters: paging, moments in time, charger ids.

Every route takes these from here, so a bound is decided once. Numbers and moments are
bounded because the stores are not: SQLite and PostgreSQL hold 64-bit integers, the
time-series store holds nanoseconds since 1970 in 64 bits (up to 2262), and Python's
``datetime`` stops at year 9999. A value outside the bounds is a 422 naming the parameter,
never an ``OverflowError`` deep in a store.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import Query
from pydantic import AfterValidator, BeforeValidator, Field

from chargetwin.topics import CHARGER_ID_ALPHABET, CHARGER_ID_PATTERN

__all__ = [
    "EARLIEST",
    "LATEST",
    "MAX_OFFSET",
    "ChargerIdField",
    "EpochSeconds",
    "Moment",
    "Offset",
    "page_limit",
]

MAX_OFFSET = 1_000_000_000
"""The largest ``offset``: far more rows than any list holds, far below 2**63."""

EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
LATEST = datetime(2200, 1, 1, tzinfo=UTC)
"""Moments the API accepts: from the epoch to 2200, inside every store's range."""

_RANGE = f"{EARLIEST:%Y-%m-%d} to {LATEST:%Y-%m-%d}"
# RFC 3339 section 5.6 (date-time), with the time optional: "2026-01-01" is midnight UTC.
_RFC3339 = re.compile(
    r"^\d{4}-\d{2}-\d{2}([Tt ]\d{2}:\d{2}(:\d{2}(\.\d{1,9})?)?([Zz]|[+-]\d{2}:?\d{2})?)?$"
)


def _rfc3339_text(value: Any) -> Any:
    """Only text that looks like a date: pydantic would also read ``0.5`` or ``17e8`` as
    seconds since the epoch, which no client means in a field documented as date-time."""
    if isinstance(value, datetime):
        return value
    if not isinstance(value, str) or not _RFC3339.fullmatch(value):
        raise ValueError("an RFC 3339 date-time such as 2026-01-01T00:00:00Z")
    return value


def _within_range(moment: datetime) -> datetime:
    aware = moment if moment.tzinfo else moment.replace(tzinfo=UTC)
    if not EARLIEST <= aware <= LATEST:
        raise ValueError(f"a moment from {_RANGE}")
    return moment


Moment = Annotated[
    datetime,
    BeforeValidator(_rfc3339_text),
    AfterValidator(_within_range),
    Field(description=f"RFC 3339 date-time (UTC when no offset is given), {_RANGE}."),
]
"""A moment in a query parameter or a body: RFC 3339 text, within :data:`EARLIEST` ..
:data:`LATEST`."""

EpochSeconds = Annotated[float, Field(ge=EARLIEST.timestamp(), le=LATEST.timestamp())]
"""A moment as seconds since the epoch (the alert API's habit, like Alertmanager's)."""

Offset = Annotated[
    int, Query(ge=0, le=MAX_OFFSET, description="Items to skip before the first one returned.")
]


def page_limit(maximum: int) -> Any:
    """The ``limit`` query parameter of a list that returns at most ``maximum`` items."""
    return Query(ge=1, le=maximum, description=f"Items to return, 1 to {maximum}.")


ChargerIdField = Annotated[
    str,
    Field(
        min_length=1,
        max_length=48,
        pattern=CHARGER_ID_PATTERN.pattern,
        description=f"A charger id: 1-48 characters of {CHARGER_ID_ALPHABET}.",
    ),
]
"""A charger id in a request body (:func:`chargetwin.topics.validate_charger_id`'s alphabet)."""
