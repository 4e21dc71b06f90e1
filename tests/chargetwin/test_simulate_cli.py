"""``chargetwin simulate --ocpp`` / ``--ocpp-mix``: what the options become, and clear
errors for a version or a mix the simulator does not have."""

from __future__ import annotations

import pytest

from launch.cli import OCPP_VERSIONS, build_parser
from simulator.options import OCPP_VERSIONS as SIMULATED


def test_the_cli_offers_the_versions_the_simulator_has() -> None:
    assert OCPP_VERSIONS == SIMULATED


def test_ocpp_and_ocpp_mix_parse() -> None:
    parser = build_parser()
    args = parser.parse_args(["simulate", "--ocpp", "2.0.1"])
    assert (args.ocpp, args.ocpp_mix) == ("2.0.1", None)
    args = parser.parse_args(["simulate", "--ocpp-mix", "1.6=60, 2.0.1=40"])
    assert args.ocpp_mix == (("1.6", 60.0), ("2.0.1", 40.0))
    args = parser.parse_args(["simulate"])
    assert (args.ocpp, args.ocpp_mix) == (None, None)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--ocpp", "2.1"], "invalid choice: '2.1'"),
        (["--ocpp-mix", "1.6=60,2.0=40"], "OCPP version '2.0' is not one of 1.6, 2.0.1"),
        (["--ocpp-mix", "1.6"], "is not VERSION=WEIGHT"),
        (["--ocpp-mix", "1.6=a"], "is not a number"),
        (["--ocpp-mix", "1.6=0,2.0.1=0"], "add up to 0"),
        (["--ocpp", "1.6", "--ocpp-mix", "1.6=1"], "not allowed with argument"),
    ],
)
def test_a_bad_version_or_mix_is_a_usage_error(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_:
        build_parser().parse_args(["simulate", *argv])
    assert exit_.value.code == 2
    assert message in capsys.readouterr().err
