"""Settings and the CLI: options, variables, clear errors, the generated configuration page."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from chargetwin.settings import Settings
from launch.cli import build_parser, load_settings, main

ROOT = Path(__file__).resolve().parents[2]


def test_the_cli_wins_over_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHARGETWIN_OCPP_PORT", "9100")
    monkeypatch.setenv("CHARGETWIN_API_PORT", "8100")
    args = build_parser().parse_args(["up", "--api-port", "8200", "--auto-register"])
    settings = load_settings(args)
    assert settings.ocpp_port == 9100  # from the environment
    assert settings.api_port == 8200  # the option beats the variable
    assert settings.auto_register is True


@pytest.mark.parametrize("command", ["up", "twin", "api", "bridge", "fleet", "demo"])
def test_every_setting_is_an_option_of_every_component_command(
    command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit):
        main([command, "--help"])
    text = capsys.readouterr().out
    for name in Settings.model_fields:
        assert f"--{name.replace('_', '-')}" in text
        assert f"CHARGETWIN_{name.upper()}" in text


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (["up", "--ocpp-port", "70000"], "--ocpp-port / CHARGETWIN_OCPP_PORT"),
        (["up", "--mqtt-url", "http://broker"], "--mqtt-url / CHARGETWIN_MQTT_URL"),
        (["up", "--database-url", "mysql://x"], "--database-url / CHARGETWIN_DATABASE_URL"),
        (["up", "--log-level", "LOUD"], "--log-level / CHARGETWIN_LOG_LEVEL"),
    ],
)
def test_bad_values_are_refused_with_the_option_and_variable(
    argv: list[str], words: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "invalid settings" in err and words in err


def test_bad_environment_is_refused_too(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("CHARGETWIN_API_PORT", "not-a-port")
    assert main(["api"]) == 2
    assert "CHARGETWIN_API_PORT" in capsys.readouterr().err


def test_token_create_prints_a_token_the_api_accepts(tmp_path: Path) -> None:
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "launch.cli",
            "token",
            "create",
            "--role",
            "operator",
            "--data-dir",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
    ).stdout.strip()
    assert out.startswith("ct_") and len(out) > 30


def test_configuration_page_is_current() -> None:
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        from settings_doc import render
    finally:
        sys.path.pop(0)
    page = (ROOT / "docs" / "configuration.md").read_text()
    assert page == render(), "run: .venv/bin/python scripts/settings_doc.py > docs/configuration.md"


def test_rules_check_and_test_report_file_and_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pack = sorted((ROOT / "rules" / "pack").glob("*.yaml"))
    rule_files = [str(p) for p in pack if not p.name.endswith("_test.yaml")]
    test_files = [str(p) for p in pack if p.name.endswith("_test.yaml")]
    assert rule_files and test_files
    assert main(["rules", "check", *rule_files]) == 0
    assert main(["rules", "test", *test_files]) == 0

    broken = tmp_path / "broken.yaml"
    broken.write_text("groups:\n  - name: g\n    rules:\n      - alert: A\n        query: 5\n")
    capsys.readouterr()
    assert main(["rules", "check", str(broken)]) == 1
    err = capsys.readouterr().err
    assert f"{broken}:5:" in err  # the line of the bad query


def test_rules_check_recognises_the_test_files_beside_the_rules(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pack = sorted(str(p) for p in (ROOT / "rules" / "pack").glob("*.yaml"))
    assert main(["rules", "check", *pack]) == 0  # rules/pack/*.yaml, as an operator types it
    out = capsys.readouterr().out
    assert "charger_offline_test.yaml: SUCCESS: test file" in out

    orphan = tmp_path / "orphan_test.yaml"
    orphan.write_text("rule_files: [missing.yaml]\ntests: []\n")
    assert main(["rules", "check", str(orphan)]) == 1
    assert "missing.yaml" in capsys.readouterr().err


def _options(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    with pytest.raises(SystemExit):
        main([*argv, "--help"])
    return capsys.readouterr().out


def test_rules_and_token_create_list_only_the_settings_they_use(
    capsys: pytest.CaptureFixture[str],
) -> None:
    rules = _options(["rules"], capsys)
    assert "--rules-webhooks" in rules and "--influx-url" in rules
    assert "--ocpp-port" not in rules and "--api-port" not in rules
    token = _options(["token", "create"], capsys)
    assert "--database-url" in token and "--role" in token
    assert "--ocpp-port" not in token and "--rules-webhooks" not in token


def test_rules_lists_every_setting_its_code_reads() -> None:
    """The rules command's option list (launch.cli.RULES_SETTINGS) keeps up with rules/."""
    import ast

    from launch.cli import RULES_SETTINGS

    derived = {"broker_url": ("mqtt_url", "mqtt_port"), "database_target": ("database_url",)}
    read: set[str] = set()
    for path in (ROOT / "rules").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if (
                isinstance(node, ast.Attribute)
                and isinstance(node.value, ast.Name)
                and node.value.id == "settings"
            ):
                read.update(derived.get(node.attr, (node.attr,)))
    assert read, "no settings read in rules/?"
    assert read <= set(RULES_SETTINGS), read - set(RULES_SETTINGS)


def test_webhooks_take_a_json_list_in_one_option_and_refuse_non_urls(
    capsys: pytest.CaptureFixture[str],
) -> None:
    args = build_parser().parse_args(
        ["rules", "--rules-webhooks", '["http://a.example/hook", "https://b.example/x"]']
    )
    assert load_settings(args).rules_webhooks == ["http://a.example/hook", "https://b.example/x"]
    args = build_parser().parse_args(
        ["rules", "--rules-webhooks", "http://a.example/1", "--rules-webhooks", "http://b/2"]
    )
    assert load_settings(args).rules_webhooks == ["http://a.example/1", "http://b/2"]

    assert main(["rules", "--rules-webhooks", "alerts.example.com/hook"]) == 2
    assert "--rules-webhooks / CHARGETWIN_RULES_WEBHOOKS" in capsys.readouterr().err


def test_rules_tool_needs_an_action_and_files() -> None:
    with pytest.raises(SystemExit):
        main(["rules", "frobnicate", "x.yaml"])
    with pytest.raises(SystemExit):
        main(["rules", "check"])
