"""Rule files: validation with file and line, a broken file never stops the others,
and ``chargetwin rules check|test`` exit codes and output."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rules.cli import check_files, test_files
from rules.files import bundled_pack, load_rules, schema, validate_text
from rules.testing import expand_values

GOOD = """groups:
  - name: g
    rules:
      - alert: Hot
        query: {measurement: meter_values, field: value, aggregation: max, group_by: [charger]}
        condition: {op: ">", threshold: 70}
        annotations: {summary: "$charger at $value"}
"""


def test_rules_files_valid_text_has_no_findings() -> None:
    assert validate_text(GOOD) == []


@pytest.mark.parametrize(
    ("text", "line", "words"),
    [
        (GOOD.replace('op: ">"', 'op: "=>"'), 6, "'=>' is not one of"),
        (GOOD.replace("aggregation: max", "aggregation: median"), 5, "'median' is not one of"),
        (
            GOOD.replace("      - alert: Hot\n", "      - alert: Hot\n        bogus: 1\n"),
            4,
            "bogus",
        ),
        (GOOD.replace('        condition: {op: ">", threshold: 70}\n', ""), 4, "'condition'"),
        (GOOD.replace('"$charger at $value"', '"${charger at"'), 7, "invalid template"),
        (GOOD.replace("  - name: g", "  - name: g\n   bad indent: ["), 3, "invalid YAML"),
        (GOOD + GOOD.split("rules:\n", 1)[1].replace("  - name: g\n", ""), 8, "duplicate alert"),
        (GOOD.replace("group_by: [charger]", "group_by: [charger], window: 10x"), 5, "window"),
    ],
)
def test_rules_files_findings_name_the_line(text: str, line: int, words: str) -> None:
    findings = validate_text(text, "rules.yaml")
    assert findings, "expected a finding"
    assert any(f.line == line and words in f.message for f in findings), findings
    assert str(findings[0]).startswith(f"rules.yaml:{findings[0].line}: ")


def test_rules_files_a_broken_file_leaves_the_others_loaded(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(GOOD)
    (tmp_path / "b.yaml").write_text("groups: [{name: x, rules: [{alert: 1}]}]\n")
    (tmp_path / "c_test.yaml").write_text("not: a rule file\n")
    ruleset = load_rules([tmp_path])
    assert [r.alert for r in ruleset.rules] == ["Hot"]
    assert [Path(f.file).name for f in ruleset.findings] == ["b.yaml"] * len(ruleset.findings)
    assert ruleset.findings[0].line == 1


def test_rules_files_schema_is_published_json() -> None:
    data = json.loads((bundled_pack().parent / "schema.json").read_text())
    assert data == schema() and data["title"] == "ChargeTwin rule file"


def test_rules_files_expand_values() -> None:
    assert expand_values("1 _ 0+10x2 5x1 Faulted*2 _x1") == [
        1.0, None, 0.0, 10.0, 20.0, 5.0, 5.0, "Faulted", "Faulted", None, None,
    ]  # fmt: skip


def test_rules_files_check_prints_file_and_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    good, bad = tmp_path / "good.yaml", tmp_path / "bad.yaml"
    good.write_text(GOOD)
    bad.write_text(GOOD.replace("threshold: 70", "threshold: hot"))
    assert check_files([good]) == 0
    assert check_files([good, bad]) == 1
    out = capsys.readouterr()
    assert f"{good}: SUCCESS: 1 rules found" in out.out
    assert f"{bad}:6: " in out.err and "'hot' is not of type 'number'" in out.err


def test_rules_files_test_command_reports_a_failed_expectation(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "hot.yaml").write_text(GOOD)
    test = tmp_path / "hot_test.yaml"
    test.write_text(
        """rule_files: [hot.yaml]
evaluation_interval: 1m
tests:
  - name: hot
    input_series:
      - measurement: meter_values
        tags: {charger: CP-1}
        values: "80 80"
    alert_rule_test:
      - eval_time: 1m
        alertname: Hot
        exp_alerts:
          - exp_labels: {charger: CP-1, severity: warning}
            exp_annotations: {summary: "CP-1 at 80"}
"""
    )
    assert test_files([test]) == 0
    test.write_text(test.read_text().replace("CP-1 at 80", "CP-1 at 81"))
    assert test_files([test]) == 1
    err = capsys.readouterr().err
    assert f"{test}:10: hot: Hot at 1m: expected {{charger=CP-1, severity=warning}}" in err
    assert "got {charger=CP-1, severity=warning} {'summary': 'CP-1 at 80'}" in err


def test_rules_files_bundled_pack_checks_and_passes_its_tests() -> None:
    pack = bundled_pack()
    rule_files = sorted(p for p in pack.glob("*.yaml") if not p.stem.endswith("_test"))
    tests = sorted(pack.glob("*_test.yaml"))
    assert len(tests) >= 5
    assert {p.stem for p in rule_files} == {p.stem.removesuffix("_test") for p in tests}
    assert check_files(rule_files) == 0
    assert test_files(tests) == 0
