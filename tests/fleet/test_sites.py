"""A site's desired energy state: validation, merge patches, the limit the schedule gives at
its edges, and the store (versions, compare-and-set, reports) on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from chargetwin.database import Database
from fleet.sites import SiteNotFound, SiteStore, VersionConflict, energy_errors, limit_at
from twin.registry import ChargerRegistry
from twin.stores import ShadowStore


def at(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


def test_energy_errors_name_each_problem() -> None:
    assert energy_errors({"limitA": 100, "strategy": "priority", "minimumA": 8}) == []
    assert [p for p, _ in energy_errors({"limitA": "lots", "phases": 2})] == ["/limitA", "/phases"]
    assert energy_errors({"bogus": 1})[0][0] == ""
    problems = dict(energy_errors({"failsafeA": 4, "chargers": {"CP-1": {"ratedA": 5}}}))
    assert set(problems) == {"/failsafeA", "/chargers/CP-1/ratedA"}
    assert energy_errors({"failsafeA": 0})[0][0] == "/failsafeA"  # it could never charge
    assert energy_errors({"failsafeA": 6}) == []
    window = {"cron": "0 17 * * mon-fri", "durationMinutes": 60, "timezone": "Mars/Olympus"}
    assert [p for p, _ in energy_errors({"schedule": [window]})] == [
        "/schedule/0",
        "/schedule/0/cron",
    ]


def test_the_schedule_replaces_the_base_limit_while_open() -> None:
    desired = {
        "limitA": 100,
        "schedule": [
            {"name": "peak", "cron": "0 17 * * *", "durationMinutes": 120, "limitA": 60},
            {"name": "tight", "cron": "30 17 * * *", "durationMinutes": 30, "limitKW": 20.7},
        ],
    }
    before = limit_at(desired, at("2026-12-07T16:59:59"))
    assert (before.amps, before.window, before.next_edge) == (100, None, at("2026-12-07T17:00"))
    edge = limit_at(desired, at("2026-12-07T17:00:00"))
    assert (edge.amps, edge.window, edge.next_edge) == (60, "peak", at("2026-12-07T17:30"))
    both = limit_at(desired, at("2026-12-07T17:45:00"))  # the lowest of those open: 30 A
    assert (round(both.amps or 0, 6), both.window) == (30.0, "tight")
    after = limit_at(desired, at("2026-12-07T19:00:00"))
    assert (after.amps, after.window) == (100, None)
    assert limit_at({}, 0.0).amps is None
    assert limit_at({"limitKW": 11, "phases": 1}, 0.0).amps == pytest.approx(11_000 / 230)


async def test_site_store_versions_and_reports(db: Database) -> None:
    registry = ChargerRegistry(db)
    await registry.create_schema()
    store = SiteStore(db)
    await store.create_schema()
    await registry.register("CP-1", None, site="north", tags=["fleet"])
    await registry.register("CP-2", None, site="north")
    assert await store.names() == ["north"]
    assert (await store.chargers_by_site()) == {"north": [("CP-1", ["fleet"]), ("CP-2", [])]}
    with pytest.raises(SiteNotFound):
        await store.energy("south")
    assert (await store.energy("north")).version == 0

    energy, errors = await store.patch_energy("north", {"limitA": 50}, actor="ops", now=1.0)
    assert errors == [] and energy.version == 1
    energy, errors = await store.patch_energy(
        "north", {"limitA": None, "limitKW": 30}, actor="ops", expected_version=1, now=2.0
    )
    assert energy.desired == {"limitKW": 30} and energy.version == 2
    with pytest.raises(VersionConflict):
        await store.patch_energy("north", {"limitA": 10}, actor="ops", expected_version=1)
    kept, errors = await store.patch_energy("north", {"strategy": "loudest"}, actor="ops")
    assert errors and kept.version == 2  # nothing stored
    assert (await store.energy("north")).updated_by == "ops"

    await store.put_report("north", {"loadA": 3.0}, 5.0)
    await store.put_report("north", {"loadA": 4.0}, 6.0)
    assert await store.report("north") == {"loadA": 4.0}
    assert await store.reports() == {"north": {"loadA": 4.0}}
    await ShadowStore(db).create_schema()
    documents = await store.documents(["CP-1"])
    assert documents == {"CP-1": {}}  # no shadow yet
