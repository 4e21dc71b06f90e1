"""Schemathesis over every operation, every phase and every check, against `chargetwin up`
over real HTTP (real SQLite data folder, the twin on the real broker, an admin token).

Bounded so the suite stays fast; ``python -m bench.api_fuzz --examples N`` runs it larger.
"""

from __future__ import annotations

from pathlib import Path

from bench.api_fuzz import fuzz, report_lines

EXAMPLES = 2


async def test_schemathesis_finds_no_server_error_and_no_schema_mismatch(
    mosquitto_url: str, tmp_path: Path
) -> None:
    result = await fuzz(mosquitto_url, examples=EXAMPLES, seed_value=1, workers=2, work=tmp_path)
    assert result.operations >= 77
    assert result.generated > 1000  # every phase ran, coverage included
    assert result.clean, "\n".join(report_lines(result)) + "\n" + result.output[-8000:]
