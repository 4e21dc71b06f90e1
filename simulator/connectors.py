"""A connector's state, from which its reported status and error code are derived.

Connector 0 stands for the charger as a whole (OCPP 1.6 section 4.9). The session flows
that move a connector through its states are :mod:`simulator.sessions`; faults set its
flags (:mod:`simulator.faults`).
"""

from __future__ import annotations

import asyncio
from typing import Any

from ocpp.v16.enums import ChargePointErrorCode, ChargePointStatus, Reason

from simulator.meters import Meter

__all__ = ["FAULTED_BY", "Connector"]

# Faults that take a connector out of service (status Faulted, section 4.9); others only
# set the errorCode and leave the status as it is.
FAULTED_BY = frozenset({ChargePointErrorCode.high_temperature, ChargePointErrorCode.ground_failure})


class Connector:
    """One connector's state; the reported status is derived from it, never stored twice.

    Connector 0 stands for the charger as a whole (section 4.9): it never has a session.
    """

    __slots__ = (
        "begin_sample",
        "fault",
        "id",
        "id_tag",
        "inoperative_scheduled",
        "limit_changed",
        "meter",
        "meter_failed",
        "operative",
        "phase",
        "started_at",
        "stop",
        "stop_reason",
        "stuck",
        "transaction_id",
        "transaction_known",
    )

    def __init__(self, connector_id: int, meter: Meter) -> None:
        self.id = connector_id
        self.meter = meter
        self.phase = ChargePointStatus.available
        self.operative = True
        self.inoperative_scheduled = False
        self.fault: ChargePointErrorCode | None = None
        self.stuck = False
        self.meter_failed = False
        self.transaction_id: int | None = None
        self.started_at: float | None = None  # epoch seconds, for Relative profiles
        # Set while transaction_id is known (from the StartTransaction.conf on).
        self.transaction_known = asyncio.Event()
        # Set when the charging profiles that bound this connector change.
        self.limit_changed = asyncio.Event()
        self.id_tag: str | None = None
        self.begin_sample: dict[str, Any] | None = None
        self.stop: asyncio.Event | None = None
        self.stop_reason = Reason.local

    @property
    def status(self) -> ChargePointStatus:
        if self.fault in FAULTED_BY:
            return ChargePointStatus.faulted
        if not self.operative and self.phase == ChargePointStatus.available:
            return ChargePointStatus.unavailable
        return self.phase

    @property
    def error_code(self) -> ChargePointErrorCode:
        if self.fault is not None:
            return self.fault
        if self.stuck:
            return ChargePointErrorCode.connector_lock_failure
        if self.meter_failed:
            return ChargePointErrorCode.power_meter_failure
        return ChargePointErrorCode.no_error

    @property
    def busy(self) -> bool:
        """A session holds the connector (from Preparing until the cable is unplugged)."""
        return self.phase != ChargePointStatus.available or self.transaction_id is not None

    @property
    def in_session(self) -> bool:
        """A session task runs on this connector, or a transaction is still open."""
        return self.stop is not None or self.transaction_id is not None

    def can_start(self) -> bool:
        return (
            self.id > 0
            and not self.busy
            and self.operative
            and self.fault is None
            and not self.stuck
            and not self.inoperative_scheduled
        )

    def request_stop(self, reason: Reason) -> bool:
        """Ask the running session to end; False when there is none."""
        if self.stop is None or self.stop.is_set():
            return False
        self.stop_reason = reason
        self.stop.set()
        return True
