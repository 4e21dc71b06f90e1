"""Settings of every ChargeTwin process, from CLI options and ``CHARGETWIN_*`` variables.

Groups: network (host and ports), MQTT, stores (data dir, database, InfluxDB), twin limits,
OCPP bridge (pings, limits, TLS), security. Each field is one CLI option (``--ocpp-port``)
and one variable (``CHARGETWIN_OCPP_PORT``); the CLI wins over the environment.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

Port = Annotated[int, Field(ge=1, le=65535)]


class Settings(BaseSettings):
    """One place for every option; see ``README.md`` (Configuration) for the table."""

    model_config = SettingsConfigDict(env_prefix="CHARGETWIN_", extra="forbid")

    # --- network ---
    host: str = Field("127.0.0.1", description="Address the OCPP and API servers listen on.")
    ocpp_port: Port = Field(9000, description="OCPP-J websocket port.")
    api_port: Port = Field(8000, description="HTTP API and dashboard port.")
    public_url: str | None = Field(
        None,
        description="Base URL chargers use to reach the API (http[s]://host[:port]) for "
        "firmware downloads and diagnostics uploads; unset derives http://HOST:API_PORT "
        "(127.0.0.1 when HOST is 0.0.0.0 or ::, so set it for chargers on other machines).",
    )
    command_timeout: float = Field(
        35.0,
        gt=0,
        le=600,
        description="Seconds the API waits for a command's outcome from the bridge; then 504. "
        "Keep it above --ocpp-command-timeout, so the charger's own silence is reported as "
        "such rather than as the API giving up first.",
    )

    maintenance_interval: float = Field(
        30.0,
        gt=0,
        le=3600,
        description="Most seconds between two looks of the maintenance scheduler (windows, "
        "inspections); it also wakes at every window edge and on every change.",
    )

    energy_interval: float = Field(
        60.0,
        gt=0,
        le=3600,
        description="Most seconds between two passes of the site energy allocator over every "
        "site; it also recomputes a site on its meter values, sessions, presence and "
        "confirmations, at its schedule's edges, and at once after a limit changes.",
    )

    campaign_interval: float = Field(
        5.0,
        gt=0,
        le=600,
        description="Seconds between two steps of the firmware campaign engine (it also steps "
        "at once after a campaign is created, resumed or cancelled).",
    )

    # --- MQTT ---
    mqtt_url: str | None = Field(
        None,
        description="mqtt://[user:password@]host[:port] or mqtts://...; unset runs the "
        "embedded broker on 127.0.0.1:--mqtt-port.",
    )
    mqtt_port: Port = Field(1883, description="Port of the embedded broker.")
    embedded_broker: Literal["auto", "mosquitto", "amqtt"] = Field(
        "auto",
        description="The embedded broker: mosquitto runs Mosquitto as a child process (its "
        "sessions persisted in --data-dir/mosquitto), amqtt runs in this process but drops "
        "QoS 1 deliveries a subscriber leaves unacknowledged for 5 s (bursts above a few "
        "hundred messages per second); auto takes Mosquitto when it is installed.",
    )
    mosquitto_path: Path | None = Field(
        None,
        description="The mosquitto binary of the embedded broker; unset looks on PATH, then "
        "in /usr/sbin and /usr/local/sbin.",
    )
    mqtt_prefix: str = Field("chargetwin", description="Topic prefix.")
    mqtt_client_id: str | None = Field(
        None,
        description="Client id base: each component connects as BASE-COMPONENT, so give "
        "every process of a component its own. Unset (recommended): twin and rules connect as "
        "chargetwin-COMPONENT-NAME, NAME kept in an instance slot in --data-dir/instances "
        "(the same after a restart, so the persistent session comes back; a second process "
        "on the data dir takes the next slot), the others as "
        "chargetwin-COMPONENT-HOST-RANDOM, new at each start (docs/mqtt.md, Client ids).",
    )
    mqtt_subscribers: str = Field(
        "twin,rules",
        description="Components (comma-separated) that must receive what the bridge "
        "publishes: after every connect to the broker the bridge holds its messages, and "
        "answers no charger call that produced one, until an instance of each announced "
        "its subscriptions (docs/operations.md, Delivery guarantees). Empty: do not wait.",
    )
    mqtt_replay_seconds: float = Field(
        10.0,
        ge=0,
        le=600,
        description="Seconds of acknowledged messages the bridge keeps (at most its outbox "
        "size) to send again when a broker without persistence restarted and lost what it "
        "held for its subscribers.",
    )
    mqtt_share_group: str | None = Field(
        None,
        description="Join workers to MQTT shared subscriptions ($share/GROUP-component/...) "
        "for scale-out; unset subscribes normally.",
    )

    # --- stores ---
    data_dir: Path = Field(Path("./data"), description="Folder for embedded stores and files.")
    database_url: str | None = Field(
        None,
        description="postgresql://... for shadows and records; unset uses SQLite in --data-dir.",
    )
    file_store: Literal["auto", "data-dir", "database"] = Field(
        "auto",
        description="Where uploaded firmware images and diagnostics files are kept: "
        "data-dir in --data-dir (one API process, or several sharing that folder), database "
        "in the database in 1 MiB chunks (every API replica on one PostgreSQL serves every "
        "file); auto takes database with a postgresql:// --database-url, else data-dir.",
    )
    influx_url: str | None = Field(None, description="InfluxDB URL; unset: embedded store.")
    influx_database: str = Field("chargetwin", description="InfluxDB database (bucket).")
    influx_username: str | None = None
    influx_password: SecretStr | None = None
    rules: Path | None = Field(None, description="Folder of rule files; unset: bundled pack.")
    rules_webhooks: list[str] = Field(
        [],
        description="http(s) URLs that get every firing and resolved alert by POST: repeat "
        "the option, or give a JSON list (as CHARGETWIN_RULES_WEBHOOKS must).",
    )
    rules_dry_run: bool = Field(
        False, description="Log rule actions (work orders, desired state, commands) only."
    )
    series_retention_days: float = Field(
        500.0,
        ge=0,
        description="Days the embedded time-series store keeps status, presence, session and "
        "other event history (0: forever). NEVI quarterly reports read twelve months ending "
        "with each month of the quarter, so keep 15 months or more. The newest point of "
        "each series before the cutoff is always kept. InfluxDB: set the server's retention "
        "policy instead (docs/operations.md).",
    )
    meter_values_retention_days: float = Field(
        200.0,
        ge=0,
        description="Days the embedded time-series store keeps meter values (0: forever); "
        "the sessions' peak power in EV-ChART session records comes from them.",
    )
    spool_max_bytes: int = Field(
        1 << 30,
        ge=1 << 20,
        description="Most telemetry spooled in --data-dir/spool while the time-series store "
        "is down; when full the recorder stops acknowledging and the broker holds messages.",
    )

    # --- twin limits ---
    max_document_bytes: int = Field(
        64 * 1024, ge=1024, description="Largest shadow state (JSON bytes); above: 413."
    )
    max_request_bytes: int = Field(
        128 * 1024, ge=1024, description="Largest shadow request payload; above: 413."
    )
    max_depth: int = Field(8, ge=2, le=32, description="Deepest nesting in a state; above: 400.")

    # --- OCPP bridge ---
    ocpp_ping_interval: float = Field(
        20.0, ge=0, description="Seconds between websocket pings to each charger; 0: none."
    )
    ocpp_ping_timeout: float = Field(
        20.0, ge=0, description="Seconds to wait for a pong before closing; 0: wait forever."
    )
    ocpp_max_frame_bytes: int = Field(
        64 * 1024, ge=1024, description="Largest OCPP frame; a bigger one closes with 1009."
    )
    ocpp_flood_rate: float = Field(
        50.0, gt=0, description="Frames per second a charger may send, sustained."
    )
    ocpp_flood_burst: int = Field(
        100, ge=1, description="Frames a charger may send at once above the sustained rate."
    )
    ocpp_command_timeout: float = Field(
        30.0,
        gt=0,
        description="Seconds the bridge waits for a charger's answer to an OCPP call "
        "(operator commands and reconciliation); then the call ends as a timeout, which the "
        "API answers with 504.",
    )
    ocpp_tls_cert: Path | None = Field(
        None,
        description="PEM server certificate (chain); with --ocpp-tls-key the endpoint is "
        "wss:// (OCPP security profile 2, TLS 1.2 or newer).",
    )
    ocpp_tls_key: Path | None = Field(
        None, validate_default=True, description="PEM private key of --ocpp-tls-cert."
    )
    ocpp_tls_client_ca: Path | None = Field(
        None,
        validate_default=True,
        description="PEM CA that signs charger certificates: chargers must present one "
        "whose subject CN is their id (security profile 3); Basic auth is not asked.",
    )

    # --- security ---
    admin_token: SecretStr | None = Field(
        None, description="Accepted as an admin API token when set at start-up."
    )
    auto_register: bool = Field(
        False, description="Let unknown chargers in and register them (demo only)."
    )
    charger_password_key: SecretStr | None = Field(
        None,
        description="Secret key of charger password hashes (HMAC-SHA256), 32 characters or "
        "more (e.g. openssl rand -hex 32). Unset: DATA_DIR/charger-password.key, created "
        "(mode 0600) on first start. Every bridge and API process must use the same key: "
        "set it when they do not share one data dir. Keep it apart from database backups.",
    )
    ftp_port: int = Field(
        0,
        ge=0,
        le=65535,
        description="Port of the API's FTP endpoint for diagnostics and log uploads (chargers "
        "that upload only over FTP) on --host; 0: none. Passive data ports are chosen by the "
        "system: allow them through a firewall, or run it where chargers reach every port.",
    )
    ftp_tls_cert: Path | None = Field(
        None,
        description="PEM certificate (chain) of the FTP endpoint; with --ftp-tls-key it is "
        "FTPS (explicit, AUTH TLS, TLS 1.2 or newer; nothing in clear) and get-diagnostics "
        "gives ftps:// locations.",
    )
    ftp_tls_key: Path | None = Field(
        None, validate_default=True, description="PEM private key of --ftp-tls-cert."
    )
    ftp_models: list[str] = Field(
        [],
        description="Charger models (VENDOR/MODEL, as their BootNotification says) whose "
        "get-diagnostics goes to the FTP endpoint unless the request names a protocol.",
    )
    metrics_port: int = Field(
        0,
        ge=0,
        le=65535,
        description="Port of a /metrics endpoint (Prometheus) of this process on --host; 0: "
        "none. The API also serves /metrics on its own port (viewer token).",
    )
    log_level: str = Field("INFO", description="DEBUG, INFO, WARNING or ERROR.")

    @field_validator("mqtt_url")
    @classmethod
    def _check_mqtt_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        parts = urlsplit(value)
        if parts.scheme not in ("mqtt", "mqtts", "tcp", "ssl") or not parts.hostname:
            raise ValueError("must look like mqtt://host:1883 or mqtts://host:8883")
        return value

    @field_validator("rules_webhooks", mode="before")
    @classmethod
    def _expand_webhooks(cls, value: object) -> object:
        """``--rules-webhooks '["http://a", "http://b"]'`` is one option holding a JSON
        list: take its URLs, as the variable's JSON list is taken."""
        if not isinstance(value, list):
            return value
        urls: list[object] = []
        for item in value:
            if isinstance(item, str) and item.lstrip().startswith("["):
                try:
                    parsed = json.loads(item)
                except ValueError as exc:
                    raise ValueError(f"not a JSON list of URLs: {item!r} ({exc})") from exc
                if not isinstance(parsed, list):
                    raise ValueError(f"not a JSON list of URLs: {item!r}")
                urls.extend(parsed)
            else:
                urls.append(item)
        return urls

    @field_validator("rules_webhooks")
    @classmethod
    def _check_webhooks(cls, value: list[str]) -> list[str]:
        for url in value:
            parts = urlsplit(url)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ValueError(f"{url!r} is not an http:// or https:// URL with a host")
        return value

    @field_validator("charger_password_key")
    @classmethod
    def _check_charger_password_key(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value().strip()) < 32:
            raise ValueError("must be 32 characters or more (e.g. openssl rand -hex 32)")
        return value

    @field_validator("ocpp_tls_key")
    @classmethod
    def _check_tls_key(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        if (value is None) != (info.data.get("ocpp_tls_cert") is None):
            raise ValueError("--ocpp-tls-cert and --ocpp-tls-key go together")
        return value

    @field_validator("ftp_tls_key")
    @classmethod
    def _check_ftp_tls_key(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        if (value is None) != (info.data.get("ftp_tls_cert") is None):
            raise ValueError("--ftp-tls-cert and --ftp-tls-key go together")
        return value

    @field_validator("ocpp_tls_client_ca")
    @classmethod
    def _check_tls_client_ca(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        if value is not None and info.data.get("ocpp_tls_cert") is None:
            raise ValueError("needs --ocpp-tls-cert and --ocpp-tls-key (profile 3 is over TLS)")
        return value

    @field_validator("public_url")
    @classmethod
    def _check_public_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("must look like http://host:8000 or https://host")
        return value.rstrip("/")

    @field_validator("database_url")
    @classmethod
    def _check_database_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if not value.startswith(("postgresql://", "postgres://", "sqlite:///")):
            raise ValueError("must be postgresql://... or sqlite:///PATH")
        return value

    @field_validator("log_level")
    @classmethod
    def _check_log_level(cls, value: str) -> str:
        level = value.upper()
        if level not in ("DEBUG", "INFO", "WARNING", "ERROR"):
            raise ValueError("must be DEBUG, INFO, WARNING or ERROR")
        return level

    @field_validator("mqtt_prefix")
    @classmethod
    def _check_prefix(cls, value: str) -> str:
        if (
            not value
            or any(c in value for c in "+#$")
            or value.startswith("/")
            or value.endswith("/")
        ):
            raise ValueError("must be a plain topic path such as 'chargetwin'")
        return value

    @property
    def broker_url(self) -> str:
        """The broker every component connects to: ``--mqtt-url`` or the embedded one."""
        return self.mqtt_url or f"mqtt://127.0.0.1:{self.mqtt_port}"

    @property
    def api_public_url(self) -> str:
        """The base URL chargers reach the API at: ``--public-url`` or derived from host."""
        if self.public_url:
            return self.public_url
        host = "127.0.0.1" if self.host in ("0.0.0.0", "::", "") else self.host
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.api_port}"

    @property
    def database_target(self) -> str:
        """The shadow/record database: a PostgreSQL URL or ``sqlite:///`` path."""
        if self.database_url:
            return self.database_url
        return f"sqlite:///{self.data_dir / 'chargetwin.db'}"
