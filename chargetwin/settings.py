"""Settings of every ChargeTwin process, from CLI options and ``CHARGETWIN_*`` variables.

Groups: network (host and ports), MQTT, stores (data dir, database, InfluxDB), twin limits,
security. Each field is one CLI option (``--ocpp-port``) and one variable
(``CHARGETWIN_OCPP_PORT``); the CLI wins over the environment.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

Port = Annotated[int, Field(ge=1, le=65535)]


class Settings(BaseSettings):
    """One place for every option; see ``README.md`` (Configuration) for the table."""

    model_config = SettingsConfigDict(env_prefix="CHARGETWIN_", extra="forbid")

    # --- network ---
    host: str = Field("127.0.0.1", description="Address the OCPP and API servers listen on.")
    ocpp_port: Port = Field(9000, description="OCPP-J websocket port.")
    api_port: Port = Field(8000, description="HTTP API and dashboard port.")

    # --- MQTT ---
    mqtt_url: str | None = Field(
        None,
        description="mqtt://[user:password@]host[:port] or mqtts://...; unset runs the "
        "embedded broker on 127.0.0.1:--mqtt-port.",
    )
    mqtt_port: Port = Field(1883, description="Port of the embedded broker.")
    mqtt_prefix: str = Field("chargetwin", description="Topic prefix.")
    mqtt_client_id: str | None = Field(
        None, description="Client id base; unset derives one from the component and host."
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
    influx_url: str | None = Field(None, description="InfluxDB URL; unset: embedded store.")
    influx_database: str = Field("chargetwin", description="InfluxDB database (bucket).")
    influx_username: str | None = None
    influx_password: SecretStr | None = None
    rules: Path | None = Field(None, description="Folder of rule files; unset: bundled pack.")

    # --- twin limits ---
    max_document_bytes: int = Field(
        64 * 1024, ge=1024, description="Largest shadow state (JSON bytes); above: 413."
    )
    max_request_bytes: int = Field(
        128 * 1024, ge=1024, description="Largest shadow request payload; above: 413."
    )
    max_depth: int = Field(8, ge=2, le=32, description="Deepest nesting in a state; above: 400.")

    # --- security ---
    admin_token: SecretStr | None = Field(
        None, description="Accepted as an admin API token when set at start-up."
    )
    auto_register: bool = Field(
        False, description="Let unknown chargers in and register them (demo only)."
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
    def database_target(self) -> str:
        """The shadow/record database: a PostgreSQL URL or ``sqlite:///`` path."""
        if self.database_url:
            return self.database_url
        return f"sqlite:///{self.data_dir / 'chargetwin.db'}"
