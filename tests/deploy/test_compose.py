"""docker-compose.yml, .env.example, Dockerfile and .dockerignore, checked without Docker.

No Docker engine runs where these tests run, so the compose file is validated by reading
it: services, commands, the CHARGETWIN_* variables against the real Settings class, MQTT
users against the ACL, mounts against the repository, ${VAR} against .env.example. When
the compose CLI plugin is installed, ``docker compose config`` checks the syntax as well.
"""

from __future__ import annotations

import fnmatch
import re
import shutil
import subprocess
import tomllib
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from chargetwin.settings import Settings

REPO = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO / "docker-compose.yml"
ENV_EXAMPLE = REPO / ".env.example"
COMPONENTS = ("twin", "bridge", "rules", "fleet", "api")  # the CLI subcommands, one service each
INFRASTRUCTURE = ("mosquitto", "influxdb", "postgres")
SETTINGS_VARIABLES = {f"CHARGETWIN_{name.upper()}" for name in Settings.model_fields}

# ${VAR}, ${VAR:-default}, ${VAR-default}, ${VAR:?error}, ${VAR?error}, $VAR; $$ is a "$".
INTERPOLATION = re.compile(
    r"\$(?:\$|\{(?P<braced>\w+)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}|(?P<bare>\w+))"
)


def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(COMPOSE_FILE.read_text())
    return data


def services() -> dict[str, dict[str, Any]]:
    result: dict[str, dict[str, Any]] = compose()["services"]
    return result


def env_example() -> dict[str, str]:
    values = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, sep, value = line.partition("=")
            assert sep, f".env.example: not KEY=value: {line!r}"
            values[key.strip()] = value.strip()
    return values


def interpolate(text: str, env: dict[str, str]) -> str:
    """What compose makes of ``text`` with ``env`` (the subset of its rules used here)."""

    def replace(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name = match.group("braced") or match.group("bare")
        op, arg = match.group("op"), match.group("arg")
        value = env.get(name)
        if op in (":?", "?") and (value is None or (op == ":?" and value == "")):
            raise AssertionError(f"compose would stop: {arg}")
        if op in (":-", "-") and (value is None or (op == ":-" and value == "")):
            return str(arg)
        return value or ""

    return INTERPOLATION.sub(replace, text)


def environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment", {})
    if isinstance(env, list):  # the KEY=value list form
        env = dict(item.split("=", 1) for item in env)
    return {key: str(value) for key, value in env.items()}


def command_of(service: dict[str, Any]) -> list[str]:
    command = service["command"]
    return command.split() if isinstance(command, str) else list(command)


def acl_users() -> set[str]:
    lines = (REPO / "mosquitto" / "acl").read_text().splitlines()
    return {line.split()[1] for line in lines if line.startswith("user ")}


# --- services ----------------------------------------------------------------------------


def test_services_exist() -> None:
    assert set(services()) >= {*INFRASTRUCTURE, *COMPONENTS}
    assert services()["mosquitto"]["image"].startswith("eclipse-mosquitto:2")
    assert services()["influxdb"]["image"] == "influxdb:1.8"
    assert services()["postgres"]["image"].startswith("postgres:16")


@pytest.mark.parametrize("name", COMPONENTS)
def test_component_runs_its_cli_subcommand(name: str) -> None:
    service = services()[name]
    assert service["build"] == "."
    assert command_of(service) == [name]


@pytest.mark.parametrize("name", COMPONENTS)
def test_component_sets_only_settings_variables(name: str) -> None:
    env = environment(services()[name])
    unknown = {key for key in env if key.startswith("CHARGETWIN_")} - SETTINGS_VARIABLES
    assert not unknown, f"{name}: not fields of chargetwin.settings.Settings: {unknown}"


@pytest.mark.parametrize("name", COMPONENTS)
def test_component_settings_validate(name: str) -> None:
    """With the values of .env.example, Settings accepts the component's environment."""
    values = {
        key.removeprefix("CHARGETWIN_").lower(): interpolate(value, env_example())
        for key, value in environment(services()[name]).items()
    }
    settings = Settings.model_validate(values)
    assert settings.host == "0.0.0.0"
    assert str(settings.data_dir) == "/data"
    assert settings.mqtt_url is not None
    assert urlsplit(settings.mqtt_url).hostname == "mosquitto"
    assert settings.database_url is not None
    assert urlsplit(settings.database_url).hostname == "postgres"
    assert settings.influx_url == "http://influxdb:8086"
    assert settings.influx_username is not None and settings.influx_password is not None
    if name == "api":
        assert settings.admin_token is not None


@pytest.mark.parametrize("name", COMPONENTS)
def test_component_connects_to_mqtt_as_its_own_acl_user(name: str) -> None:
    url = environment(services()[name])["CHARGETWIN_MQTT_URL"]
    user = urlsplit(interpolate(url, env_example())).username
    assert user == name
    assert user in acl_users()


@pytest.mark.parametrize("name", COMPONENTS)
def test_component_data_dir_is_a_volume(name: str) -> None:
    service = services()[name]
    data_dir = environment(service)["CHARGETWIN_DATA_DIR"]
    targets = {volume.split(":")[1] for volume in service.get("volumes", [])}
    assert data_dir in targets
    sources = [volume.split(":")[0] for volume in service["volumes"]]
    assert all(source in compose()["volumes"] for source in sources)


def test_published_ports_match_settings() -> None:
    assert services()["bridge"]["ports"] == [
        f"{environment(services()['bridge'])['CHARGETWIN_OCPP_PORT']}:9000"
    ]
    assert services()["api"]["ports"] == [
        f"{environment(services()['api'])['CHARGETWIN_API_PORT']}:8000"
    ]


def test_only_twin_and_rules_join_shared_subscriptions() -> None:
    """The bridge must see every command and the api every answer: neither may share."""
    sharing = {
        name
        for name in COMPONENTS
        if "CHARGETWIN_MQTT_SHARE_GROUP" in environment(services()[name])
    }
    assert sharing == {"twin", "rules"}


def test_depends_on_targets_exist_and_wait_for_health() -> None:
    every = services()
    for name, service in every.items():
        for target, condition in (service.get("depends_on") or {}).items():
            assert target in every, f"{name} depends on unknown service {target}"
            expected = "service_healthy" if "healthcheck" in every[target] else "service_started"
            assert condition["condition"] == expected, f"{name} -> {target}"
    for name in COMPONENTS:
        assert set(every[name]["depends_on"]) == set(INFRASTRUCTURE)


def test_databases_have_healthchecks() -> None:
    for name in ("postgres", "influxdb"):
        assert services()[name]["healthcheck"]["test"][0] in ("CMD", "CMD-SHELL")


# --- mounts and the broker configuration -------------------------------------------------


def bind_mounts() -> list[tuple[str, Path, str]]:
    mounts = []
    for name, service in services().items():
        for volume in service.get("volumes", []):
            source, target = volume.split(":")[:2]
            if source.startswith((".", "/")):
                mounts.append((name, REPO / source, target))
    return mounts


def test_mounted_files_exist_in_the_repository() -> None:
    assert bind_mounts(), "expected the broker configuration to be mounted"
    for name, source, target in bind_mounts():
        assert source.exists(), f"{name}: {source} (mounted on {target}) is missing"


def test_broker_config_paths_fall_in_the_mounts() -> None:
    """password_file, acl_file, include_dir and persistence lie where compose mounts them."""
    (_, config_dir, config_target), *_ = [m for m in bind_mounts() if m[0] == "mosquitto"]
    mosquitto = services()["mosquitto"]
    named = {v.split(":")[1] for v in mosquitto["volumes"] if not v.startswith((".", "/"))}
    conf = dict(
        line.split(maxsplit=1)
        for line in (config_dir / "mosquitto.conf").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    )
    for key in ("password_file", "acl_file", "include_dir"):
        path = conf[key]
        assert path.startswith(config_target + "/"), key
        if key != "password_file":  # made from .env by mosquitto/make-passwd.sh
            assert (config_dir / path.removeprefix(config_target + "/")).exists(), key
    assert conf["persistence_location"].rstrip("/") in named
    tls = dict(
        line.split(maxsplit=1)
        for line in (config_dir / "tls.conf").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    )
    for key in ("cafile", "certfile", "keyfile"):
        assert tls[key].startswith(config_target + "/certs/"), key


# --- secrets -----------------------------------------------------------------------------


def strings_in(node: Any) -> list[str]:
    """Every key and value of the parsed file (compose interpolates those, not comments)."""
    if isinstance(node, dict):
        return [s for key, value in node.items() for s in (*strings_in(key), *strings_in(value))]
    if isinstance(node, list):
        return [s for item in node for s in strings_in(item)]
    return [node] if isinstance(node, str) else []


def test_every_interpolated_variable_is_in_env_example() -> None:
    texts = strings_in(compose())
    used = {
        match.group("braced") or match.group("bare")
        for text in texts
        for match in INTERPOLATION.finditer(text)
        if match.group(0) != "$$"
    }
    example = env_example()
    assert used <= set(example), f"missing from .env.example: {used - set(example)}"
    helper = (REPO / "mosquitto" / "make-passwd.sh").read_text()
    unused = {key for key in example if key not in used and key.lower() not in helper.lower()}
    assert not unused, f".env.example variables nobody reads: {unused}"
    for text in texts:  # no required variable left unset
        interpolate(text, example)


def test_no_secret_is_written_in_the_compose_file() -> None:
    for name, service in services().items():
        for key, value in environment(service).items():
            if re.search("PASSWORD|TOKEN|SECRET|DATABASE_URL|MQTT_URL", key):
                assert "${" in value, f"{name}: {key} must come from .env"
    assert "${" in environment(services()["postgres"])["POSTGRES_PASSWORD"]


def test_secrets_stay_out_of_the_image() -> None:
    ignored = (REPO / ".dockerignore").read_text().splitlines()
    assert ".env" in ignored


# --- image -------------------------------------------------------------------------------


def dockerignore_excludes(path: str) -> bool:
    excluded = False
    for raw in (REPO / ".dockerignore").read_text().splitlines():
        pattern = raw.strip()
        if not pattern or pattern.startswith("#"):
            continue
        negate = pattern.startswith("!")
        pattern = pattern.removeprefix("!").rstrip("/")
        parts = path.split("/")
        if pattern.startswith("**/"):  # at any depth
            candidates = ["/".join(parts[i:]) for i in range(len(parts))]
            pattern = pattern.removeprefix("**/")
        else:  # the path itself or a folder holding it
            candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        if any(fnmatch.fnmatchcase(candidate, pattern) for candidate in candidates):
            excluded = not negate
    return excluded


def test_dockerfile_installs_the_project() -> None:
    text = (REPO / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.11-slim\b", text, re.MULTILINE)
    assert re.search(r"pip install \.$", text, re.MULTILINE)
    assert 'ENTRYPOINT ["chargetwin"]' in text
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert "chargetwin" in pyproject["project"]["scripts"]


def test_dockerignore_keeps_what_pip_install_needs() -> None:
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    packages = pyproject["tool"]["setuptools"]["packages"]["find"]["include"]
    needed = ["pyproject.toml", pyproject["project"]["readme"]]
    needed += [pattern.rstrip("*") for pattern in packages]
    for path in needed:
        assert not dockerignore_excludes(path), f".dockerignore drops {path}"
    for path in (".env", ".venv", ".git", "data", "tests", "twin/__pycache__"):
        assert dockerignore_excludes(path), f".dockerignore should drop {path}"


# --- docker compose config ---------------------------------------------------------------


def compose_cli() -> list[str] | None:
    docker = shutil.which("docker")
    if docker is not None:
        probe = subprocess.run(
            [docker, "compose", "version"], capture_output=True, text=True, check=False
        )
        if probe.returncode == 0:
            return [docker, "compose"]
    standalone = shutil.which("docker-compose")
    return [standalone] if standalone else None


def test_docker_compose_config() -> None:
    cli = compose_cli()
    if cli is None:
        pytest.skip("the docker compose plugin (or docker-compose) is not installed")
    result = subprocess.run(
        [*cli, "-f", str(COMPOSE_FILE), "--env-file", str(ENV_EXAMPLE), "config", "-q"],
        capture_output=True,
        text=True,
        cwd=REPO,
        check=False,
    )
    assert result.returncode == 0, result.stderr
