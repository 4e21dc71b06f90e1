"""The campaign engine on a real database and the real twin: phases, thresholds, retries,
windows, idle chargers, concurrency, and continuing after a restart without double counts.

The test reports charger progress through the twin as the bridge would, and steps the
engine with ``tick()`` so every step is observable.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from api_campaigns_helpers import NEW, add_image, desired_firmware, progress, report, seed

from api.backends import Backend
from api.routes.campaigns import CampaignCreate, campaign_out
from chargetwin.mqtt import MqttClient
from chargetwin.shadow_client import ShadowRequestError
from fleet.campaigns import Campaign, CampaignStore, Policy, Window, phase_sizes
from fleet.rollouts import RETRY, CampaignEngine, _FirmwareViews, firmware_view
from fleet.rollouts import progress as decide
from twin.service import ShadowService


def make_engine(backend: Backend, interval: float = 5.0) -> CampaignEngine:
    assert backend.campaigns is not None
    return CampaignEngine(
        backend.campaigns, backend.shadows, backend.shadow_client, interval=interval
    )


async def start_campaign(backend: Backend, chargers: list[str], **policy: object) -> Campaign:
    """Create a campaign as the route does (same models), over ``chargers`` in id order."""
    from fleet.campaigns import Assignment, new_campaign_id

    image = await add_image(backend) if not await _image(backend) else await _image(backend)
    assert image is not None
    body = CampaignCreate.model_validate(
        {"name": "t", "firmwareId": image.image_id, "target": {"chargerIds": chargers}, **policy}
    )
    sizes = phase_sizes(len(chargers), body.canary, body.waves)
    assignments, start = [], 0
    for index, size in enumerate(sizes):
        assignments += [Assignment(c, index) for c in chargers[start : start + size]]
        start += size
    window = body.window
    campaign = Campaign(
        new_campaign_id(),
        "t",
        image.image_id,
        image.vendor,
        image.model,
        image.version,
        {},
        Policy(
            success_threshold=body.success_threshold,
            failure_threshold=body.failure_threshold,
            max_concurrent=body.max_concurrent,
            retries=body.retries,
            only_idle=body.only_idle,
            attempt_timeout_s=body.attempt_timeout_s,
            window=None
            if window is None
            else Window(window.cron, window.timezone, window.duration_minutes * 60.0),
        ),
        sizes,
        "running",
        0,
        None,
        0.0,
        0.0,
    )
    assert backend.campaigns is not None
    await backend.campaigns.create(campaign, assignments)
    return campaign


async def _image(backend: Backend):  # type: ignore[no-untyped-def]
    assert backend.operations is not None
    return await backend.operations.catalog.find("ChargeTwin", "CT-AC22", NEW)


async def states(backend: Backend, campaign: Campaign) -> dict[str, str]:
    assert backend.campaigns is not None
    rows = await backend.campaigns.chargers(campaign.campaign_id, limit=1000)
    return {r.charger_id: r.state for r in rows}


async def summary(backend: Backend, campaign: Campaign) -> dict[str, object]:
    assert backend.campaigns is not None
    fresh = await backend.campaigns.get(campaign.campaign_id)
    out = await campaign_out(backend.campaigns, fresh)
    return {"state": out.state, "phase": out.phase, "reason": out.reason, **out.counts}


async def install(backend: Backend, charger_id: str) -> None:
    for status in ("requested", "Downloading", "Downloaded", "Installing", "installed"):
        await progress(backend, charger_id, status)


async def test_canary_then_waves_with_concurrency_limit_until_complete(
    backend: Backend, twin: ShadowService
) -> None:
    ids = [f"CP-{i}" for i in range(6)]
    for cid in ids:
        await seed(backend, cid)
    campaign = await start_campaign(backend, ids, canary=1, waves=[2], maxConcurrent=2)
    engine = make_engine(backend)

    await engine.tick()
    assert (await states(backend, campaign))["CP-0"] == "scheduled"
    assert await desired_firmware(backend, "CP-0") == {"version": NEW}
    assert await desired_firmware(backend, "CP-1") is None  # wave 1 waits for the canary

    await progress(backend, "CP-0", "requested")
    await progress(backend, "CP-0", "Downloading")
    await engine.tick()
    assert (await states(backend, campaign))["CP-0"] == "downloading"
    await progress(backend, "CP-0", "Installing")
    await engine.tick()
    assert (await states(backend, campaign))["CP-0"] == "installing"
    await progress(backend, "CP-0", "installed")
    await engine.tick()  # canary done: wave 1 (CP-1, CP-2) starts
    now = await states(backend, campaign)
    assert now["CP-0"] == "installed"
    assert [now[c] for c in ("CP-1", "CP-2", "CP-3")] == ["scheduled", "scheduled", "queued"]
    assert (await summary(backend, campaign))["phase"] == 1

    await install(backend, "CP-1")
    await install(backend, "CP-2")
    await engine.tick()  # the last wave: at most two at a time
    now = await states(backend, campaign)
    assert sorted(now.values()).count("scheduled") == 2
    for cid in ("CP-3", "CP-4", "CP-5"):
        await install(backend, cid)  # the third one installs on its own (reported version)
    await engine.tick()
    await engine.tick()
    done = await summary(backend, campaign)
    assert done["state"] == "completed" and done["installed"] == 6
    assert backend.campaigns is not None
    assert await backend.campaigns.conflicts(ids) == {}


async def test_failures_pause_the_campaign_and_resume_retries_them(
    backend: Backend, twin: ShadowService
) -> None:
    ids = [f"CP-{i}" for i in range(4)]
    for cid in ids:
        await seed(backend, cid)
    campaign = await start_campaign(
        backend, ids, canary=4, retries=1, failureThreshold=25, maxConcurrent=10
    )
    engine = make_engine(backend)
    await engine.tick()
    for cid in ("CP-0", "CP-1"):
        await progress(backend, cid, "requested")
        await progress(backend, cid, "InstallationFailed")
    await engine.tick()  # first failure of each: back to the queue, then started again
    rows = {r.charger_id: r for r in await backend.campaigns.chargers(campaign.campaign_id)}  # type: ignore[union-attr]
    assert rows["CP-0"].state == "scheduled" and rows["CP-0"].attempts == 2
    assert "attempt 1 failed: InstallationFailed; retrying" in str(rows["CP-0"].reason)

    for cid in ("CP-0", "CP-1"):  # the retry fails too: retries spent
        await progress(backend, cid, "requested")
        await progress(backend, cid, "DownloadFailed")
    await engine.tick()
    paused = await summary(backend, campaign)
    assert paused["state"] == "paused" and paused["failed"] == 2
    assert "2 of 4 chargers failed in the canary" in str(paused["reason"])
    await engine.tick()  # paused: nothing starts, nothing is counted again
    assert (await summary(backend, campaign))["failed"] == 2

    assert backend.campaigns is not None
    assert await backend.campaigns.requeue(campaign.campaign_id, ("failed",), "again") == 2
    assert await backend.campaigns.set_state(campaign.campaign_id, "running", old=("paused",))
    await engine.tick()
    for cid in ids:
        await install(backend, cid)
    await engine.tick()
    done = await summary(backend, campaign)
    assert done["state"] == "completed" and done["installed"] == 4 and done["failed"] == 0


async def test_a_new_engine_continues_after_a_restart_without_double_counting(
    backend: Backend, twin: ShadowService
) -> None:
    ids = [f"CP-{i}" for i in range(5)]
    for cid in ids:
        await seed(backend, cid)
    campaign = await start_campaign(backend, ids, canary=2, maxConcurrent=5)
    first = make_engine(backend, interval=0.05)
    async with first.running():
        for _ in range(100):
            if await desired_firmware(backend, "CP-1"):
                break
            await asyncio.sleep(0.02)
    await install(backend, "CP-0")
    await install(backend, "CP-1")
    installed_before = (await summary(backend, campaign))["installed"]
    assert installed_before == 0  # the first engine stopped before it saw them

    # A new engine on a new store object (as in a new process) picks the campaign up.
    second = CampaignEngine(
        CampaignStore(backend.db), backend.shadows, backend.shadow_client, interval=0.05
    )
    await second.tick()
    await second.tick()
    after = await summary(backend, campaign)
    assert after["installed"] == 2 and after["phase"] == 1 and after["scheduled"] == 3
    await second.tick()
    assert (await summary(backend, campaign))["installed"] == 2  # not counted twice
    for cid in ids[2:]:
        await install(backend, cid)
    await second.tick()
    assert (await summary(backend, campaign))["state"] == "completed"


async def test_an_offline_charger_keeps_its_place_and_is_retried_after_a_timeout(
    backend: Backend, twin: ShadowService
) -> None:
    await seed(backend, "CP-0")
    await seed(backend, "CP-1", online=False)
    campaign = await start_campaign(backend, ["CP-0", "CP-1"], canary=2, attemptTimeoutS=1)
    engine = make_engine(backend)
    await engine.tick()
    now = await states(backend, campaign)
    assert now == {"CP-0": "scheduled", "CP-1": "queued"}  # offline: not started
    await progress(backend, "CP-0", "requested")
    await progress(backend, "CP-0", "Downloading")
    await report(backend, "CP-0", {"connection": {"online": False}})  # gone mid-download
    await engine.tick()
    assert (await states(backend, campaign))["CP-0"] == "downloading"
    await asyncio.sleep(1.1)
    await engine.tick()  # no outcome within the attempt timeout: retried (queued, offline)
    assert backend.campaigns is not None
    row = (await backend.campaigns.chargers(campaign.campaign_id, limit=1))[0]
    assert row.state == "queued" and "no news within 1 s" in str(row.reason)
    await report(backend, "CP-0", {"connection": {"online": True}})
    await report(backend, "CP-1", {"connection": {"online": True}})
    await engine.tick()
    assert set((await states(backend, campaign)).values()) == {"scheduled"}
    await install(backend, "CP-0")
    await install(backend, "CP-1")
    await engine.tick()
    done = await summary(backend, campaign)
    assert done["state"] == "completed" and done["installed"] == 2


async def test_window_and_idle_rules_hold_updates_back(
    backend: Backend, twin: ShadowService
) -> None:
    await seed(backend, "CP-0", status="Charging")
    await seed(backend, "CP-1")
    later = (datetime.now(UTC) + timedelta(hours=12)).hour
    closed = await start_campaign(
        backend, ["CP-1"], window={"cron": f"0 {later} * * *", "durationMinutes": 60}
    )
    engine = make_engine(backend)
    await engine.tick()
    assert await states(backend, closed) == {"CP-1": "queued"}  # outside its window
    assert backend.campaigns is not None
    await backend.campaigns.set_state(closed.campaign_id, "cancelled", old=("running",))
    await engine.tick()

    busy = await start_campaign(backend, ["CP-0"], window={"cron": "* * * * *"})
    await engine.tick()
    assert await states(backend, busy) == {"CP-0": "queued"}  # charging: not idle
    await report(backend, "CP-0", {"connectors": {"1": {"status": "Finishing"}}})
    await engine.tick()
    assert await states(backend, busy) == {"CP-0": "queued"}
    await report(backend, "CP-0", {"connectors": {"1": {"status": "Available"}}})
    await engine.tick()
    assert await states(backend, busy) == {"CP-0": "scheduled"}


@pytest.mark.parametrize(
    ("moment", "inside"),
    [
        (datetime(2026, 1, 1, 1, 30, tzinfo=UTC), True),  # 02:30 in Berlin
        (datetime(2026, 1, 1, 0, 59, tzinfo=UTC), False),  # 01:59 in Berlin
        (datetime(2026, 1, 1, 2, 0, tzinfo=UTC), False),  # 03:00: the hour is over
    ],
)
def test_a_window_is_open_for_its_duration_after_each_cron_time(
    moment: datetime, inside: bool
) -> None:
    window = Window("0 2 * * *", "Europe/Berlin", 3600.0)
    assert window.contains(moment) is inside


@pytest.mark.parametrize(
    ("canary", "waves", "sizes"),
    [
        (1, [], [1, 9]),
        ("10%", ["50%"], [1, 5, 4]),
        (3, [3, 3, 3], [3, 3, 3, 1]),
        (20, [5], [10]),
        ("25%", ["100%"], [3, 7]),
    ],
)
def test_phase_sizes(canary: int | str, waves: list[int | str], sizes: list[int]) -> None:
    assert phase_sizes(10, canary, waves) == sizes


async def test_update_many_answers_every_charger_through_one_subscription(
    backend: Backend, twin: ShadowService, api_mqtt: MqttClient
) -> None:
    """A batch of desired writes: each charger gets its own answer (accepted, or the twin's
    refusal), and the process subscribed once for all of them, not twice per charger."""
    ids = [f"CP-{i}" for i in range(12)]
    for cid in ids:
        await seed(backend, cid)
    sent: list[str] = []
    real = api_mqtt.subscribe_acked

    async def counting(topic_filter: str, *args: Any, **kwargs: Any) -> None:
        sent.append(topic_filter)
        await real(topic_filter, *args, **kwargs)

    api_mqtt.subscribe_acked = counting  # type: ignore[method-assign]
    states: dict[str, dict[str, Any]] = {
        c: {"desired": {"firmware": {"version": NEW}}} for c in ids
    }
    states["CP-3"] = {"desired": {"firmware": {"version": ""}}}  # invalid: the twin says 422
    answers = await backend.shadow_client.update_many(states, concurrency=4)

    assert sorted(answers) == sorted(ids)
    refused = answers["CP-3"]
    assert isinstance(refused, ShadowRequestError) and refused.code == 422
    for cid in ids:
        if cid != "CP-3":
            answer = answers[cid]
            assert isinstance(answer, dict)
            assert answer["state"] == {"desired": {"firmware": {"version": NEW}}}
            assert await desired_firmware(backend, cid) == {"version": NEW}
    assert len(sent) == 2 and all("/+/shadow/update/" in f for f in sent), sent


async def test_the_engine_parses_a_shadow_again_only_when_its_version_moved(
    backend: Backend, twin: ShadowService
) -> None:
    """In-flight chargers are read every tick; their documents only when they changed."""
    ids = ["CP-0", "CP-1"]
    for cid in ids:
        await seed(backend, cid)
    views = _FirmwareViews(backend.db)
    first = await views.read(ids)
    again = await views.read(ids)
    assert again["CP-0"] is first["CP-0"] and again["CP-1"] is first["CP-1"]  # not re-read

    await progress(backend, "CP-1", "Downloading")
    moved = await views.read(ids)
    assert moved["CP-0"] is first["CP-0"]
    assert moved["CP-1"] is not first["CP-1"]
    assert moved["CP-1"]["state"]["reported"]["firmware"]["status"] == "Downloading"
    assert set(await views.read(["CP-1", "CP-9"])) == {"CP-1"}  # no shadow, no view


def test_a_firmware_view_decides_like_the_whole_document() -> None:
    """:func:`fleet.rollouts.progress` on the slim view gives what it gives on the full document."""
    now = 1000.0
    document = {
        "state": {
            "reported": {
                "firmware": {
                    "version": "1.4.2",
                    "status": "Downloading",
                    "updatedAt": now - 5,
                    "requested": {"version": NEW, "at": now - 10},
                },
                "refused": {"config": {"value": "x"}},
                "connectors": {"1": {"status": "Available"}},
                "config": {"HeartbeatInterval": "300"},
            },
            "desired": {"firmware": {"version": NEW}, "config": {"A": "b"}},
        },
        "metadata": {"desired": {"firmware": {"version": {"timestamp": now - 20}}}},
        "version": 7,
    }
    for at in (now, now + 200):
        assert decide(firmware_view(document), NEW, now - 30, 120, at) == decide(
            document, NEW, now - 30, 120, at
        )
    refused = {**document}
    refused["state"] = {
        **document["state"],
        "reported": {
            **document["state"]["reported"],
            "refused": {"firmware": {"value": NEW, "at": now, "status": "Rejected"}},
        },
    }
    assert decide(firmware_view(refused), NEW, now - 30, 120, now) == (RETRY, "Rejected")
