"""Hostile shadow updates over MQTT and desired patches over HTTP: every one answered,
none with a server error, and the platform still serves ordinary requests after.

Bounded; ``python -m bench.shadow_fuzz --requests 100000`` is the full figure.
"""

from __future__ import annotations

from pathlib import Path

from bench.shadow_fuzz import fuzz, report_lines

REQUESTS = 1_500


async def test_hostile_shadow_requests_are_all_answered_without_server_errors(
    mosquitto_url: str, tmp_path: Path
) -> None:
    counts = await fuzz(mosquitto_url, tmp_path, requests=REQUESTS, http_share=0.2, seed=7)
    summary = "\n".join(report_lines(counts))
    assert counts.mqtt_sent + sum(counts.http_answers.values()) == REQUESTS, summary
    assert counts.mqtt_answers["accepted"] > 0 and counts.http_answers[200] > 0, summary
    assert counts.internal_errors == 0 and counts.unanswered == 0, summary
    assert not counts.log_errors and counts.healthy_after, summary
    # A 504 is the API giving up on a slow twin: tolerated here, on a shared CI machine,
    # as long as it stays rare; the benchmark counts it as a server error.
    assert counts.http_answers[504] <= REQUESTS // 100, summary
