"""The ``chargetwin`` command: run the platform or one component, and operator tools.

Every option of :class:`chargetwin.settings.Settings` is an option of every command that
runs a component (``--ocpp-port``) and a ``CHARGETWIN_*`` variable; the option wins.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence
from typing import Any

from pydantic import ValidationError

from chargetwin import __version__
from chargetwin.settings import Settings

COMPONENTS = ("up", "twin", "api", "bridge", "rules", "fleet", "demo")
# The versions `chargetwin simulate --ocpp` offers (simulator.options.OCPP_VERSIONS).
OCPP_VERSIONS = ("1.6", "2.0.1")


def _option(name: str) -> str:
    return "--" + name.replace("_", "-")


# The settings a command reads, where it is not every one: its --help lists only these.
RULES_SETTINGS = (
    "mqtt_url", "mqtt_port", "mqtt_prefix", "mqtt_client_id", "mqtt_share_group",
    "data_dir", "database_url", "influx_url", "influx_database", "influx_username",
    "influx_password", "rules", "rules_webhooks", "rules_dry_run", "series_retention_days",
    "meter_values_retention_days", "spool_max_bytes", "metrics_port", "host", "log_level",
)  # fmt: skip
TOKEN_SETTINGS = ("data_dir", "database_url")


def _add_settings_options(
    parser: argparse.ArgumentParser, only: Sequence[str] | None = None
) -> None:
    group = parser.add_argument_group("settings (each also a CHARGETWIN_* variable)")
    for name, field in Settings.model_fields.items():
        if only is not None and name not in only:
            continue
        env = f"CHARGETWIN_{name.upper()}"
        help_text = f"{field.description or ''} [{env}]".strip()
        if field.annotation == list[str]:
            group.add_argument(
                _option(name),
                dest=name,
                action="append",
                default=argparse.SUPPRESS,
                metavar="VALUE",
                help=help_text + " (repeat the option for several)",
            )
        elif field.annotation is bool:
            group.add_argument(
                _option(name),
                dest=name,
                action=argparse.BooleanOptionalAction,
                default=argparse.SUPPRESS,
                help=help_text,
            )
        else:
            default = field.default
            shown = "" if default is None else f" (default {default})"
            group.add_argument(
                _option(name),
                dest=name,
                default=argparse.SUPPRESS,
                metavar=name.split("_")[-1].upper(),
                help=help_text + shown,
            )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="chargetwin",
        description="Run a fleet of EV charging stations as digital twins.",
    )
    parser.add_argument("--version", action="version", version=f"chargetwin {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    helps = {
        "up": "run every component in one process (embedded broker and stores by default)",
        "twin": "run the device-shadow service",
        "api": "run the operator HTTP API",
        "bridge": "run the OCPP-J central system",
        "rules": "run the telemetry recorder and rules engine; or: rules check|test FILE...",
        "fleet": "run the fleet engines (campaigns, maintenance windows); one process leads, "
        "others stand by",
        "demo": "run everything with a simulated fleet; prints the dashboard URL and a token",
    }
    for name in COMPONENTS:
        p = sub.add_parser(name, help=helps[name], description=helps[name])
        _add_settings_options(p, RULES_SETTINGS if name == "rules" else None)
        if name == "demo":
            p.add_argument("--chargers", type=int, default=20, help="simulated chargers")
        if name == "rules":
            p.add_argument(
                "tool",
                nargs="*",
                metavar="check|test FILE",
                help="'check FILE...' validates rule files, 'test FILE...' runs rule test "
                "files (as promtool check/test rules); none: run the component",
            )
    sim = sub.add_parser(
        "simulate",
        help="run a simulated fleet of OCPP 1.6J and/or 2.0.1 chargers against a central system",
        description="Run simulated OCPP 1.6J chargers or 2.0.1 stations (boots, device model, "
        "sessions, meter values, faults, firmware updates, log uploads) against "
        "ws://HOST:PORT/ocpp.",
    )
    sim.add_argument(
        "--url",
        default="ws://127.0.0.1:9000/ocpp",
        help="central system URL; the charger id is appended",
    )
    sim.add_argument("--chargers", type=int, default=10, help="how many chargers")
    sim.add_argument("--id-prefix", default="SIM-", help="charger ids are PREFIX00001...")
    sim.add_argument("--password", default=None, help="Basic-auth password of every charger")
    sim.add_argument(
        "--meter-interval",
        type=int,
        default=0,
        help="seconds between MeterValues (0: 5-10 s per charger)",
    )
    sim.add_argument(
        "--fault-rate", type=float, default=0.0, help="injected faults per charger per hour"
    )
    sim.add_argument(
        "--ramp",
        type=float,
        default=0.0,
        help="spread the first connections over this many seconds",
    )
    sim.add_argument(
        "--single-phase-share",
        type=float,
        default=0.0,
        help="share of cars that charge on one phase only (0..1)",
    )
    sim.add_argument(
        "--ev-max-current",
        type=float,
        nargs=2,
        metavar=("MIN", "MAX"),
        default=None,
        help="cars' on-board charger limit in A per phase, drawn in [MIN, MAX] "
        "(default: every car takes all the charger gives)",
    )
    sim.add_argument(
        "--profiles-survive-reboot",
        action="store_true",
        help="keep charging profiles across a reboot (default: a reboot loses them)",
    )
    sim.add_argument("--seed", type=int, default=None, help="make the run reproducible")
    versions = sim.add_mutually_exclusive_group()
    versions.add_argument(
        "--ocpp",
        choices=OCPP_VERSIONS,
        default=None,
        help="the OCPP version every charger speaks (default 1.6)",
    )
    versions.add_argument(
        "--ocpp-mix",
        type=_ocpp_mix,
        default=None,
        metavar="VERSION=WEIGHT,...",
        help="a fleet of several versions, e.g. 1.6=60,2.0.1=40 (60%% 1.6 chargers)",
    )
    sim.add_argument("--log-level", default="INFO")
    token = sub.add_parser("token", help="manage API tokens")
    token_sub = token.add_subparsers(dest="token_command", required=True, metavar="ACTION")
    create = token_sub.add_parser("create", help="create an API token and print it once")
    create.add_argument("--role", choices=("viewer", "operator", "admin"), required=True)
    create.add_argument("--name", default=None, help="who or what the token is for")
    _add_settings_options(create, TOKEN_SETTINGS)
    return parser


def _ocpp_mix(text: str) -> tuple[tuple[str, float], ...]:
    from simulator.options import parse_ocpp_mix

    try:
        return parse_ocpp_mix(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def load_settings(args: argparse.Namespace) -> Settings:
    overrides: dict[str, Any] = {
        name: getattr(args, name) for name in Settings.model_fields if hasattr(args, name)
    }
    return Settings(**overrides)


def _settings_error(exc: ValidationError) -> str:
    lines = []
    for error in exc.errors():
        name = str(error["loc"][0]) if error["loc"] else "?"
        lines.append(f"  {_option(name)} / CHARGETWIN_{name.upper()}: {error['msg']}")
    return "invalid settings:\n" + "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "simulate":
        from launch import runner

        return runner.simulate(args)
    if args.command == "rules" and args.tool:
        return _rules_tool(parser, args.tool)
    try:
        settings = load_settings(args)
    except ValidationError as exc:
        print(f"chargetwin: {_settings_error(exc)}", file=sys.stderr)
        return 2
    from launch import runner

    try:
        if args.command == "token":
            return asyncio.run(runner.create_token(settings, args.role, args.name))
        if args.command == "demo":
            return runner.run(settings, "demo", chargers=args.chargers)
        return runner.run(settings, args.command)
    except runner.StartupError as exc:
        print(f"chargetwin: {exc}", file=sys.stderr)
        return 1


def _rules_tool(parser: argparse.ArgumentParser, words: list[str]) -> int:
    from rules.cli import check_files, test_files

    action, files = words[0], words[1:]
    if action not in ("check", "test"):
        parser.error(f"rules: unknown action {action!r} (use: rules check|test FILE...)")
    if not files:
        parser.error(f"rules {action}: name at least one file")
    return check_files(files) if action == "check" else test_files(files)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
