"""The presence rules on their own: bridge statuses by epoch, and what a report writes."""

from __future__ import annotations

from twin.documents import ShadowDocument
from twin.presence import (
    STEP,
    BridgeBook,
    BridgeLost,
    BridgeStatus,
    PresenceReport,
    lost_write,
    presence_write,
)


def _doc(connection: dict[str, object], at: float) -> ShadowDocument:
    doc = ShadowDocument("CP-1")
    doc.apply({"reported": {"connection": connection}}, at)
    return doc


def _report(online: bool, since: float, bridge: str = "b1", epoch: float = 10.0) -> PresenceReport:
    return PresenceReport(online, since, bridge, epoch, "1.6")


def test_a_connection_is_alive_then_dead_never_alive_again() -> None:
    book = BridgeBook()
    assert book.status("b1", BridgeStatus(True, 10.0))
    assert book.status("b1", BridgeStatus(False, 10.0))
    assert not book.status("b1", BridgeStatus(True, 10.0))  # a late "online" of the same
    assert not book.status("b1", BridgeStatus(True, 9.0))  # an older connection
    assert book.is_dead("b1", 10.0) and not book.is_dead("b1", 11.0)
    assert book.status("b1", BridgeStatus(True, 11.0))
    assert not book.is_dead("b1", 10.0)


def test_a_will_without_an_epoch_ends_the_connection_known() -> None:
    book = BridgeBook()
    book.status("b1", BridgeStatus(True, 10.0))
    book.status("b1", BridgeStatus(False, None))
    assert book.dead_epoch("b1") == (True, 10.0)


def test_only_a_status_of_the_current_twin_connection_confirms_a_bridge() -> None:
    book = BridgeBook()
    book.status("b1", BridgeStatus(True, 10.0))
    assert book.confirmed_alive("b1")
    book.new_generation()
    assert not book.confirmed_alive("b1")
    book.status("b1", BridgeStatus(True, 10.0))
    assert book.confirmed_alive("b1")


def test_a_dead_bridges_stale_online_does_not_overrule_another_bridges_newer_one() -> None:
    book = BridgeBook()
    book.status("b1", BridgeStatus(False, 10.0))
    doc = _doc({"online": True, "since": 200.0, "bridge": "b2", "source": "bridge"}, 200.0)
    assert presence_write(doc, _report(True, 100.0), book, now=300.0) is None


def test_a_dead_bridges_online_becomes_an_offline_on_the_twins_clock() -> None:
    book = BridgeBook()
    book.status("b1", BridgeStatus(False, 10.0))
    doc = _doc({"online": True, "since": 100.0, "bridge": "b1", "epoch": 10.0}, 100.0)
    written = presence_write(doc, _report(True, 100.0), book, now=300.0)
    assert written is not None
    connection, at = written
    assert connection["online"] is False and connection["source"] == "twin" and at == 300.0


def test_an_inferred_offline_is_beaten_by_the_next_epoch_only() -> None:
    book = BridgeBook()
    inferred = {"online": False, "since": 300.0, "bridge": "b1", "epoch": 10.0, "source": "twin"}
    doc = _doc(inferred, 300.0)
    # Same epoch: an old message, ordered by its time, loses.
    stale = presence_write(doc, _report(True, 100.0, epoch=10.0), book, now=301.0)
    assert stale is not None and stale[1] == 100.0
    # Next epoch: the socket was held all along; it lands just after the inference.
    again = presence_write(doc, _report(True, 100.0, epoch=11.0), book, now=301.0)
    assert again is not None and again[1] == 300.0 + STEP and again[0]["since"] == again[1]
    # Another bridge's epoch says nothing about b1's: ordered by time only.
    other = presence_write(doc, _report(True, 100.0, bridge="b2", epoch=11.0), book, 301.0)
    assert other is not None and other[1] == 100.0


def test_a_lost_bridge_leaves_chargers_it_announced_under_a_later_epoch() -> None:
    book = BridgeBook()
    doc = _doc({"online": True, "since": 100.0, "bridge": "b1", "epoch": 11.0}, 100.0)
    assert lost_write(doc, BridgeLost("b1", 10.0), book, now=300.0) is None
    assert lost_write(doc, BridgeLost("b2", None), book, now=300.0) is None
    written = lost_write(doc, BridgeLost("b1", 11.0), book, now=50.0)
    assert written is not None and written[1] == 100.0 + STEP  # after what it overrules


def test_a_new_connection_clears_the_clock_skew_an_announced_again_one_keeps_it() -> None:
    book = BridgeBook()
    skew = {"status": "ahead", "seconds": 600.0}
    held = {"online": True, "since": 100.0, "bridge": "b1", "epoch": 10.0, "clockSkew": skew}
    doc = _doc(held, 100.0)
    # The same socket announced again after the bridge's MQTT reconnect: same since.
    again = presence_write(doc, _report(True, 100.0, epoch=11.0), book, now=150.0)
    assert again is not None and "clockSkew" not in again[0]
    # A new socket: nothing is known of the charger's clock yet.
    new = presence_write(doc, _report(True, 200.0), book, now=201.0)
    assert new is not None and new[0]["clockSkew"] is None
    # Going offline says nothing of the clock either way.
    gone = presence_write(doc, _report(False, 200.0), book, now=201.0)
    assert gone is not None and "clockSkew" not in gone[0]
    # Back after an inferred outage of the same socket (a newer epoch): kept.
    inferred = {"online": False, "since": 300.0, "bridge": "b1", "epoch": 10.0, "source": "twin"}
    doc = _doc({**held, **inferred}, 300.0)
    back = presence_write(doc, _report(True, 100.0, epoch=11.0), book, now=301.0)
    assert back is not None and "clockSkew" not in back[0]
