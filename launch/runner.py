"""Running components in this process: start order, signals, and an orderly shutdown.

Start order: twin, rules, fleet, api, bridge (a component starts after those it sends
requests to). Shutdown goes from the edge inwards so that nothing accepted is lost: the
bridge first (chargers are told goodbye and their presence goes offline), then the API,
then the fleet engines (a campaign step in flight finishes), the rules, the twin (which
finishes every queued request), and the embedded broker last.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import secrets
import signal
import sys
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from pydantic import SecretStr

from chargetwin.broker import BrokerStartError, EmbeddedBroker, embedded_broker, port_is_free
from chargetwin.collector import tune_for_long_running
from chargetwin.settings import Settings

log = logging.getLogger("chargetwin")

Runner = Callable[[Settings, asyncio.Event], Coroutine[Any, Any, None]]


class StartupError(RuntimeError):
    """The platform could not start; the message says what to change."""


@dataclass
class _Component:
    name: str
    stop: asyncio.Event
    task: asyncio.Task[None]


def configure_logging(level: str) -> None:
    logging.basicConfig(
        level=level,
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    for noisy in (
        "amqtt",
        "transitions",
        "gmqtt",
        "websockets",
        "uvicorn.access",
        "ocpp",
        "simulator.ocpp",
        # APScheduler logs two INFO lines per job run ("Running job", "executed
        # successfully"): one rule group every 30 s would fill the log. The rules engine
        # logs what an operator needs (alerts, rule failures) itself.
        "apscheduler",
    ):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLevelName(level)))


DEMO_PASSWORD = "demo-charger-password"
DEMO_ID_PREFIX = "DEMO-"
# The demo fleet mixes versions as networks do while they renew their chargers.
DEMO_OCPP_MIX = (("1.6", 70.0), ("2.0.1", 30.0))


def _simulated_fleet(chargers: int) -> Runner:
    async def run_fleet(settings: Settings, stop: asyncio.Event) -> None:
        from simulator import SimulatorOptions, run_simulator

        host = "127.0.0.1" if settings.host in ("0.0.0.0", "::") else settings.host
        options = SimulatorOptions(
            url=f"ws://{host}:{settings.ocpp_port}/ocpp",
            chargers=chargers,
            # Not the simulator's default SIM- ids: `chargetwin simulate` next to the demo
            # (README) brings chargers of its own rather than colliding with these.
            id_prefix=DEMO_ID_PREFIX,
            password=DEMO_PASSWORD,
            fault_rate_per_hour=2.0,
            ramp_s=min(10.0, chargers / 20),
            ocpp_mix=DEMO_OCPP_MIX,
        )
        await run_simulator(options, stop)

    return run_fleet


def _runners(command: str, chargers: int = 0) -> list[tuple[str, Runner]]:
    """Start order of each command's components (stopped in reverse).

    Imports are per component: ``chargetwin twin`` never loads the API or the bridge.
    """
    out: list[tuple[str, Runner]] = []
    if command in ("up", "demo", "twin"):
        from twin.app import run_twin

        out.append(("twin", run_twin))
    if command in ("up", "demo", "rules"):
        from rules.app import run_rules

        out.append(("rules", run_rules))
    if command in ("up", "demo", "fleet"):
        from fleet.app import run_fleet

        out.append(("fleet", run_fleet))
    if command in ("up", "demo", "api"):
        from api.app import run_api

        out.append(("api", run_api))
    if command in ("up", "demo", "bridge"):
        from bridge.app import run_bridge

        out.append(("bridge", run_bridge))
    if command == "demo" and chargers > 0:
        out.append(("simulator", _simulated_fleet(chargers)))
    return out


def run(settings: Settings, command: str, *, chargers: int = 0) -> int:
    configure_logging(settings.log_level)
    try:
        return asyncio.run(_main(settings, command, chargers))
    except KeyboardInterrupt:  # a second Ctrl-C during shutdown
        return 130


def _free_port_near(host: str, port: int) -> int:
    for candidate in range(port, port + 100):
        try:
            if port_is_free(host, candidate):
                return candidate
        except OSError as exc:
            raise StartupError(
                f"cannot listen on {host}:{candidate} ({exc.strerror or exc}): check --host "
                "or CHARGETWIN_HOST"
            ) from exc
    raise StartupError(f"no free port near {port}")


def _listening_ports(settings: Settings, command: str) -> list[tuple[str, str, int]]:
    """(setting, host, port) of every server socket ``command`` opens, broker aside."""
    ports = []
    if command in ("up", "demo", "api"):
        ports.append(("api_port", settings.host, settings.api_port))
    if command in ("up", "demo", "bridge"):
        ports.append(("ocpp_port", settings.host, settings.ocpp_port))
    if settings.metrics_port:
        ports.append(("metrics_port", settings.host, settings.metrics_port))
    if settings.ftp_port and command in ("up", "demo", "api"):
        ports.append(("ftp_port", settings.host, settings.ftp_port))
    return ports


def _port_option(field: str) -> str:
    return f"--{field.replace('_', '-')} or CHARGETWIN_{field.upper()}"


def check_ports(settings: Settings, command: str) -> None:
    """Refuse to start, in one line that names the option to change, when a port is taken.

    Checked before anything starts so that a taken port costs no half-started platform
    and no traceback. The probe binds as the servers do (``SO_REUSEADDR``), so the
    connections a killed instance left in TIME_WAIT do not delay a restart.
    """
    wanted = _listening_ports(settings, command)
    if command in ("up", "demo") and not settings.mqtt_url:
        wanted.append(("mqtt_port", "127.0.0.1", settings.mqtt_port))
    seen: dict[int, str] = {}
    for field, _, port in wanted:
        if port in seen:
            raise StartupError(
                f"--{seen[port].replace('_', '-')} and --{field.replace('_', '-')} are both "
                f"{port}: choose another with {_port_option(field)}"
            )
        seen[port] = field
    for field, host, port in _listening_ports(settings, command):
        try:
            free = port_is_free(host, port)
        except OSError as exc:
            raise StartupError(
                f"cannot listen on {host}:{port} ({exc.strerror or exc}): check --host or "
                f"CHARGETWIN_HOST, or choose another port with {_port_option(field)}"
            ) from exc
        if not free:
            raise StartupError(
                f"port {port} is in use on {host}: choose another with {_port_option(field)}"
            )


def _demo_settings(settings: Settings) -> tuple[Settings, str]:
    """Demo defaults: auto-registration, a fresh admin token, free ports announced."""
    updates: dict[str, object] = {"auto_register": True}
    for field, host in (
        ("api_port", settings.host),
        ("ocpp_port", settings.host),
        ("mqtt_port", "127.0.0.1"),
    ):
        wanted = getattr(settings, field)
        if field == "mqtt_port" and settings.mqtt_url:
            continue
        port = _free_port_near(host, wanted)
        if port != wanted:
            print(
                f"chargetwin demo: port {wanted} is taken, using {port} for "
                f"--{field.replace('_', '-')}",
                file=sys.stderr,
            )
        updates[field] = port
    token = (
        settings.admin_token.get_secret_value()
        if settings.admin_token
        else ("ct_demo_" + secrets.token_urlsafe(24))
    )
    updates["admin_token"] = SecretStr(token)  # model_copy does not validate
    return settings.model_copy(update=updates), token


async def _main(settings: Settings, command: str, chargers: int) -> int:
    loop = asyncio.get_running_loop()
    requested = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, requested.set)

    token = None
    if command == "demo":
        settings, token = _demo_settings(settings)
    check_ports(settings, command)

    broker: EmbeddedBroker | None = None
    if command in ("up", "demo") and not settings.mqtt_url:
        try:
            broker = embedded_broker(
                settings.embedded_broker,
                settings.mqtt_port,
                settings.data_dir,
                settings.mosquitto_path,
            )
            await broker.start()
        except BrokerStartError as exc:
            raise StartupError(str(exc)) from exc
    settings = settings.model_copy(update={"mqtt_url": settings.broker_url})
    if settings.metrics_port:
        from chargetwin.metrics import serve as serve_metrics

        serve_metrics(settings.host, settings.metrics_port)

    components: list[_Component] = []
    exit_code = 0
    try:
        for name, runner in _runners(command, chargers):
            stop = asyncio.Event()
            task = asyncio.create_task(runner(settings, stop), name=name)
            components.append(_Component(name, stop, task))
            # Let each component come up (or fail) before the next one depends on it.
            await asyncio.sleep(0.2)
            if task.done():
                break
        if command == "demo" and token is not None:
            _announce_demo(settings, token, chargers)
        tune_for_long_running()
        signals = asyncio.create_task(requested.wait(), name="signals")
        waiters: list[asyncio.Future[Any]] = [signals, *(c.task for c in components)]
        broker_ended = None
        if broker is not None:
            broker_ended = asyncio.create_task(broker.wait(), name="broker-watch")
            waiters.append(broker_ended)
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        signals.cancel()
        if broker_ended is not None and broker_ended.done():
            log.error("embedded MQTT broker stopped: %s", broker_ended.exception())
            exit_code = 1
        elif broker_ended is not None:
            broker_ended.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await broker_ended
        failed = [c for c in components if c.task.done()]
        for component in failed:
            error = component.task.exception() if not component.task.cancelled() else None
            if isinstance(error, OSError) and error.errno == errno.EADDRINUSE:
                # Taken between check_ports and the bind: still one line, no traceback.
                log.error("%s stopped: %s", component.name, error)
                exit_code = 1
            elif error is not None:
                log.error("%s stopped: %s", component.name, error, exc_info=error)
                exit_code = 1
        if requested.is_set():
            log.info("shutting down (signal received)")
    finally:
        for component in reversed(components):
            component.stop.set()
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await asyncio.wait_for(component.task, 30)
            log.info("%s stopped", component.name)
        if broker is not None:
            await broker.stop()
    if exit_code:
        raise StartupError("a component failed; see the log above")
    return 0


def _announce_demo(settings: Settings, token: str, chargers: int) -> None:
    host = "127.0.0.1" if settings.host in ("0.0.0.0", "::") else settings.host
    print(
        "\nChargeTwin demo is running\n"
        f"  dashboard       : http://{host}:{settings.api_port}/#token={token}\n"
        "                    (signs in; the page keeps the token and drops it from the URL)\n"
        f"  API             : http://{host}:{settings.api_port}/api/v1  (docs at /docs)\n"
        f"  admin token     : {token}\n"
        f"  OCPP endpoint   : ws://{host}:{settings.ocpp_port}/ocpp/{{charger_id}}\n"
        f"  MQTT broker     : {settings.broker_url}\n"
        "  Press Ctrl-C to stop.\n",
        flush=True,
    )


def simulate(args: Any) -> int:
    """``chargetwin simulate``: a fleet until Ctrl-C."""
    from simulator import SimulatorOptions, run_simulator
    from simulator.options import EvMix

    configure_logging(str(args.log_level).upper())
    share = float(args.single_phase_share)
    if not 0.0 <= share <= 1.0:
        print("--single-phase-share must be between 0 and 1", file=sys.stderr)
        return 2
    current = tuple(args.ev_max_current) if args.ev_max_current else None
    if current is not None and not 0 < current[0] <= current[1]:
        print("--ev-max-current needs 0 < MIN <= MAX", file=sys.stderr)
        return 2
    options = SimulatorOptions(
        url=args.url.rstrip("/"),
        chargers=args.chargers,
        id_prefix=args.id_prefix,
        password=args.password,
        meter_interval_s=args.meter_interval,
        fault_rate_per_hour=args.fault_rate,
        ramp_s=args.ramp,
        seed=args.seed,
        ocpp_mix=args.ocpp_mix or ((args.ocpp or "1.6", 1.0),),
        evs=EvMix(share, current),
        profiles_survive_reboot=bool(args.profiles_survive_reboot),
    )

    async def main() -> None:
        stop = asyncio.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            asyncio.get_running_loop().add_signal_handler(sig, stop.set)
        await run_simulator(options, stop)

    asyncio.run(main())
    return 0


async def create_token(settings: Settings, role: str, name: str | None) -> int:
    from api.tokens import create_token as make_token
    from chargetwin.database import connect

    db = connect(settings.database_target)
    await db.open()
    try:
        secret = await make_token(db, role, name or f"{role} token")
    finally:
        await db.close()
    print(secret)
    return 0
