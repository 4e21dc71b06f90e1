"""``run_rules`` as a component: telemetry in over MQTT (tagged with the site from the
charger registry), an alert out on MQTT."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from probes import MqttProbe

from chargetwin.database import connect
from chargetwin.settings import Settings
from rules.app import run_rules
from twin.registry import ChargerRegistry

RULES = """groups:
  - name: fast
    interval: 0.2s
    rules:
      - alert: Hot
        query: {measurement: meter_values, field: value, filters: {measurand: Temperature},
                aggregation: max, window: 1h, group_by: [site, charger, connector]}
        condition: {op: ">", threshold: 70}
        severity: critical
        annotations: {summary: "$charger at $value"}
"""


async def test_rules_app_records_evaluates_and_publishes(
    tmp_path: Path, mosquitto_url: str, prefix: str
) -> None:
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "hot.yaml").write_text(RULES)
    (tmp_path / "rules" / "broken.yaml").write_text("groups: [\n")  # refused, others run
    settings = Settings(
        mqtt_url=mosquitto_url,
        mqtt_prefix=prefix,
        mqtt_client_id=prefix,
        data_dir=tmp_path / "data",
        rules=tmp_path / "rules",
    )
    # The charger's site comes from the registry in the same database (the API writes it).
    db = connect(settings.database_target)
    await db.open()
    registry = ChargerRegistry(db)
    await registry.create_schema()
    await registry.register("CP-7", None, site="depot-north")
    await db.close()
    probe = MqttProbe(mosquitto_url)
    stop = asyncio.Event()
    task = asyncio.create_task(run_rules(settings, stop))
    try:
        await probe.subscribe(f"{prefix}/alerts/#")
        message = {
            "connectorId": 1,
            "transactionId": None,
            "timestamp": time.time(),
            "values": [{"measurand": "Temperature", "unit": "Celsius", "value": 85.0,
                        "phase": None, "context": "Sample.Periodic", "location": "Body"}],
        }  # fmt: skip
        # The recorder subscribes once started; the same point sent again replaces itself.
        for _ in range(20):
            await probe.publish(f"{prefix}/chargers/CP-7/telemetry/meterValues", message)
            try:
                alert = await probe.expect(f"{prefix}/alerts/firing", timeout=0.5, rule="Hot")
                break
            except AssertionError:
                continue
        else:
            raise AssertionError("no firing alert on MQTT")
        assert alert["labels"]["charger"] == "CP-7"
        assert alert["labels"]["site"] == "depot-north"
        assert alert["annotations"] == {"summary": "CP-7 at 85"}
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)
        probe.close()
