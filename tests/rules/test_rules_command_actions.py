"""A rule's ``command`` action as published on MQTT: labels filled into the payload, a
value that is one whole-number label alone sent as a number (OCPP's connector and EVSE ids
are integers its schemas refuse as strings), everything else as text."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from probes import MqttProbe

from chargetwin.database import Database, connect
from chargetwin.mqtt import MqttClient
from chargetwin.topics import Topics
from rules.actions import Actions
from rules.alerts import Alert
from rules.files import Action, Rule, bundled_pack, load_rules


@pytest.fixture
async def sqlite_db(tmp_path: Path) -> AsyncIterator[Database]:
    database = connect(f"sqlite:///{tmp_path}/chargetwin.db")
    await database.open()
    yield database
    await database.close()


def firing(rule: Rule, labels: dict[str, str]) -> Alert:
    now = time.time()
    return Alert(
        id=f"alert-{labels['charger']}",
        fingerprint=labels["charger"],
        rule=rule.alert,
        state="firing",
        severity=rule.severity,
        labels={"alertname": rule.alert, **labels},
        annotations={},
        value=1.0,
        active_at=now,
        last_active_at=now,
        updated_at=now,
    )


async def test_a_whole_number_label_alone_is_sent_as_a_number(
    sqlite_db: Database, mqtt: MqttClient, probe: MqttProbe, prefix: str
) -> None:
    (pack_rule,) = [r for r in load_rules([bundled_pack()]).rules if r.alert == "GroundFailure"]
    payload = {
        "connectorId": "$connector",
        "evse": {"id": "${connector}"},
        "idTag": "$tag",  # not a whole number: text
        "zero": "$zero",  # a leading zero is not a number's spelling: text
        "note": "connector $connector",  # not a placeholder alone: text
        "list": ["$connector", "$charger"],
    }
    (change_availability,) = pack_rule.actions
    assert change_availability.dry_run  # in the pack; run for real here
    rule = dataclasses.replace(
        pack_rule,
        actions=(
            dataclasses.replace(change_availability, dry_run=False),
            Action("command", {"name": "data-transfer", "payload": payload}),
        ),
    )
    await probe.subscribe(f"{prefix}/chargers/+/commands")
    actions = Actions(sqlite_db, mqtt=mqtt, topics=Topics(prefix))
    labels = {"charger": "CP-7", "connector": "2", "tag": "ABC123", "zero": "007"}
    outcomes = await actions.run(rule, firing(rule, labels))
    assert [r.outcome for r in outcomes] == ["done", "done"]
    availability = await probe.expect(
        f"{prefix}/chargers/CP-7/commands", name="change-availability"
    )
    assert availability["payload"] == {"connectorId": 2, "type": "Inoperative"}
    other = await probe.expect(f"{prefix}/chargers/CP-7/commands", name="data-transfer")
    assert other["payload"] == {
        "connectorId": 2,
        "evse": {"id": 2},
        "idTag": "ABC123",
        "zero": "007",
        "note": "connector 2",
        "list": [2, "CP-7"],
    }
