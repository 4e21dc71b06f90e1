"""A charger's protocol errors are logged at a bounded rate, with a count, never with a
traceback (a fuzz run wrote ~870 bytes of log per bad frame before)."""

from __future__ import annotations

import logging

import pytest
from conftest import OpenCharger, eventually

from bridge.errorlog import ChargerLineBudget, ProtocolErrorLog


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_first_error_of_a_period_is_logged_then_counted(caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    errors = ProtocolErrorLog("cp-1", period=60.0, clock=clock)
    for i in range(500):
        errors.error(f"bad frame {i}")
    clock.now += 61
    errors.error("bad frame after a minute")
    errors.error("one more")
    clock.now += 5
    errors.flush()
    lines = [r.getMessage() for r in caplog.records if r.name == "bridge.protocol"]
    assert lines == [
        "cp-1: bad frame 0",
        "cp-1: 499 more protocol errors in the last 60 s; last: bad frame 499",
        "cp-1: bad frame after a minute",
        "cp-1: 1 more protocol errors in the last 5 s; last: one more",
    ]
    assert all(r.exc_info is None for r in caplog.records)


def test_a_long_error_is_cut_to_one_short_line(caplog: pytest.LogCaptureFixture) -> None:
    ProtocolErrorLog("cp-1").error("x" * 10_000 + "\nsecond line")
    (line,) = [r.getMessage() for r in caplog.records if r.name == "bridge.protocol"]
    assert len(line) < 320 and "\n" not in line


def test_line_budget_per_charger_and_logger() -> None:
    clock = Clock()
    budget = ChargerLineBudget(lines=3, period=60.0, clock=clock)

    def record(charger: str, name: str = "bridge.handlers") -> logging.LogRecord:
        return logging.LogRecord(name, logging.INFO, "f", 1, "%s: booted", (charger,), None)

    assert [budget.filter(record("a")) for _ in range(5)] == [True, True, True, False, False]
    assert budget.filter(record("b"))  # another charger has its own budget
    assert budget.filter(record("a", "bridge.times"))  # and so has another logger
    unrelated = logging.LogRecord("bridge.handlers", logging.INFO, "f", 1, "started", (), None)
    assert budget.filter(unrelated)
    clock.now += 60
    first = record("a")
    assert budget.filter(first)
    assert first.getMessage() == "a: booted (2 more such lines of this charger dropped)"


async def test_a_stream_of_bad_frames_logs_two_lines(
    open_charger: OpenCharger, caplog: pytest.LogCaptureFixture
) -> None:
    charger = await open_charger()
    for i in range(80):  # under the flood burst (100)
        answer = await charger.send_raw(f'[2, "b{i}", ["x"], {{}}]', f"b{i}")
        assert answer[2] == "FormationViolation"
    await charger.close()

    def lines() -> list[logging.LogRecord]:
        return [r for r in caplog.records if r.getMessage().startswith(charger.charger_id + ":")]

    await eventually(lambda: any("more protocol errors" in r.getMessage() for r in lines()))
    protocol = [r.getMessage() for r in lines() if r.name == "bridge.protocol"]
    assert len(protocol) == 2, protocol
    assert "79 more protocol errors" in protocol[1]
    assert all(r.exc_info is None for r in lines())


async def test_a_chargers_text_cannot_start_log_lines_of_its_own(
    open_charger: OpenCharger, caplog: pytest.LogCaptureFixture
) -> None:
    # Found by bench.ocpp_fuzz: vendor, model and security event texts went into the log
    # as they came, line breaks included, so a charger could forge log lines.
    charger = await open_charger()
    forged = "V\nERROR x: forged\r\u2028"  # within maxLength 20
    await charger.result("BootNotification", {"chargePointVendor": forged, "chargePointModel": "M"})
    await charger.result(
        "SecurityEventNotification", {"type": forged, "timestamp": "2025-01-01T00:00:00Z"}
    )
    lines = [r.getMessage() for r in caplog.records if charger.charger_id in r.getMessage()]
    assert any("booted" in line for line in lines) and any("security" in line for line in lines)
    assert not [line for line in lines if len(line.splitlines()) != 1], lines
