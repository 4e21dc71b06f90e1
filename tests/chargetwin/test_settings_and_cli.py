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


@pytest.mark.parametrize("command", ["up", "twin", "api", "bridge", "demo"])
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


def test_rules_tool_needs_an_action_and_files() -> None:
    with pytest.raises(SystemExit):
        main(["rules", "frobnicate", "x.yaml"])
    with pytest.raises(SystemExit):
        main(["rules", "check"])
