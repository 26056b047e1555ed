"""One settings object, read from the environment once at start-up.

A bad value fails at start-up with a :class:`~engine.errors.ConfigurationError` naming the variable.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from engine.channels import Channel
from engine.errors import ConfigurationError

#: A list setting: read from the environment as comma-separated text, never decoded as JSON first.
CsvTuple = Annotated[tuple[str, ...], NoDecode]
CsvFloats = Annotated[tuple[float, ...], NoDecode]


def _default_data_dir() -> Path:
    return Path.home() / ".herald"


class Settings(BaseSettings):
    """Herald's configuration. Every field is an environment variable (the alias)."""

    model_config = SettingsConfigDict(frozen=True, extra="ignore", populate_by_name=True)

    database_url: str | None = Field(None, alias="DATABASE_URL")
    amqp_url: str | None = Field(None, alias="AMQP_URL")
    redis_url: str | None = Field(None, alias="REDIS_URL")
    ray_address: str | None = Field(None, alias="RAY_ADDRESS")

    data_dir: Path = Field(default_factory=_default_data_dir, alias="HERALD_DATA_DIR")
    templates_dir: Path | None = Field(None, alias="HERALD_TEMPLATES_DIR")
    http_host: str = Field("127.0.0.1", alias="HERALD_HTTP_HOST")
    http_port: int = Field(8000, ge=1, le=65535, alias="HERALD_HTTP_PORT")
    public_url: str | None = Field(None, alias="HERALD_PUBLIC_URL")
    jwt_secret: str | None = Field(None, alias="HERALD_JWT_SECRET")
    credentials_key: str | None = Field(None, alias="HERALD_CREDENTIALS_KEY")
    log_level: str = Field("INFO", alias="HERALD_LOG_LEVEL")

    senders: int = Field(2, ge=1, le=256, alias="HERALD_SENDERS")
    sender_batch: int = Field(100, ge=1, le=1000, alias="HERALD_SENDER_BATCH")
    sender_prefetch: int = Field(20, ge=1, le=1000, alias="HERALD_SENDER_PREFETCH")
    send_lease_s: float = Field(30.0, gt=0, alias="HERALD_SEND_LEASE_SECONDS")
    relay_batch: int = Field(1000, ge=1, le=10000, alias="HERALD_RELAY_BATCH")
    relay_poll_s: float = Field(0.5, gt=0, alias="HERALD_RELAY_POLL_SECONDS")
    queue_prefix: str = Field("", alias="HERALD_QUEUE_PREFIX")
    envelope_max_ids: int = Field(100, ge=1, le=1000, alias="HERALD_ENVELOPE_MAX_IDS")
    idempotency_ttl_s: int = Field(7 * 24 * 3600, ge=60, alias="HERALD_IDEMPOTENCY_TTL_SECONDS")
    retry_delays_s: CsvFloats = Field((10.0, 60.0, 300.0), alias="HERALD_RETRY_DELAYS")

    email_providers: CsvTuple = Field(("console",), alias="HERALD_EMAIL_PROVIDERS")
    sms_providers: CsvTuple = Field(("console",), alias="HERALD_SMS_PROVIDERS")
    push_providers: CsvTuple = Field((), alias="HERALD_PUSH_PROVIDERS")
    whatsapp_providers: CsvTuple = Field((), alias="HERALD_WHATSAPP_PROVIDERS")
    inapp_providers: CsvTuple = Field(("store",), alias="HERALD_INAPP_PROVIDERS")
    link_tracking: bool = Field(True, alias="HERALD_LINK_TRACKING")
    email_from: str = Field("Herald <no-reply@herald.local>", alias="HERALD_EMAIL_FROM")

    routing_table: Path | None = Field(None, alias="HERALD_ROUTING_TABLE")
    routing_refresh_s: float = Field(1.0, gt=0, le=60, alias="HERALD_ROUTING_REFRESH_SECONDS")

    object_store_mb: int = Field(256, ge=75, alias="HERALD_RAY_OBJECT_STORE_MB")
    direct_ingress: bool = Field(False, alias="HERALD_DIRECT_INGRESS")

    @field_validator(
        "retry_delays_s",
        "email_providers",
        "sms_providers",
        "push_providers",
        "whatsapp_providers",
        "inapp_providers",
        mode="before",
    )
    @classmethod
    def _split_csv(cls, value: Any) -> Any:
        if isinstance(value, str):
            return tuple(v.strip() for v in value.split(",") if v.strip())
        return value

    @field_validator("data_dir", mode="after")
    @classmethod
    def _expand(cls, value: Path) -> Path:
        return value.expanduser()

    def providers(self, channel: Channel) -> tuple[str, ...]:
        """The channel's providers in failover order."""
        chosen: tuple[str, ...] = getattr(self, f"{channel.value}_providers")
        return chosen

    @property
    def embedded_database(self) -> bool:
        return not self.database_url

    @property
    def templates_root(self) -> Path:
        if self.templates_dir:
            return self.templates_dir
        import templates

        return Path(templates.__file__).parent

    @property
    def routing_table_path(self) -> Path:
        """The routing table file: HERALD_ROUTING_TABLE, else the one shipped with Herald."""
        if self.routing_table:
            return self.routing_table.expanduser()
        from engine.routing.table import SHIPPED_TABLE

        return SHIPPED_TABLE

    @property
    def base_url(self) -> str:
        return self.public_url or f"http://{self.http_host}:{self.http_port}"

    def secret(self) -> str:
        """The signing secret for tokens and links: HERALD_JWT_SECRET, else one kept in the data dir."""
        if self.jwt_secret:
            return self.jwt_secret
        path = self.data_dir / "secret"
        if not path.exists():
            import secrets

            self.data_dir.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as fh:
                fh.write(secrets.token_urlsafe(48))
        return path.read_text().strip()


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    """Read settings from ``env`` (default: the process environment).

    Raises:
        ConfigurationError: a variable has a bad value; the message names it.
    """
    source = dict(os.environ if env is None else env)
    known = {f.alias for f in Settings.model_fields.values() if f.alias}
    values = {k: v for k, v in source.items() if k in known and v != ""}
    try:
        return Settings.model_validate(values)
    except ValidationError as err:
        problems = []
        for e in err.errors():
            field = str(e["loc"][0]) if e["loc"] else "?"
            alias = Settings.model_fields[field].alias if field in Settings.model_fields else field
            problems.append(f"{alias}={source.get(alias or '', '')!r}: {e['msg']}")
        raise ConfigurationError("invalid configuration: " + "; ".join(problems)) from None
