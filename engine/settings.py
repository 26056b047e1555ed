"""One settings object, read from the environment once at start-up.

A bad value fails at start-up with a :class:`~engine.errors.ConfigurationError` naming the variable.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, ValidationError, field_validator
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from engine.channels import Channel
from engine.errors import ConfigurationError
from engine.tenant_config.patch import DEFAULT_TENANT_EDITABLE
from engine.tenant_config.schema import check_paths

#: A list setting: read from the environment as comma-separated text, never decoded as JSON first.
CsvTuple = Annotated[tuple[str, ...], NoDecode]
CsvFloats = Annotated[tuple[float, ...], NoDecode]


def _default_data_dir() -> Path:
    return Path.home() / ".herald"


class Settings(BaseSettings):
    """Herald's configuration. Every field is an environment variable (the alias)."""

    model_config = SettingsConfigDict(frozen=True, extra="ignore", populate_by_name=True, env_ignore_empty=True)

    database_url: str | None = Field(None, alias="DATABASE_URL")
    amqp_url: str | None = Field(None, alias="AMQP_URL")
    redis_url: str | None = Field(None, alias="REDIS_URL")
    ray_address: str | None = Field(None, alias="RAY_ADDRESS")

    data_dir: Path = Field(default_factory=_default_data_dir, alias="HERALD_DATA_DIR")
    templates_dir: Path | None = Field(None, alias="HERALD_TEMPLATES_DIR")
    http_host: str = Field("127.0.0.1", alias="HERALD_HTTP_HOST")
    http_port: int = Field(8000, ge=1, le=65535, alias="HERALD_HTTP_PORT")
    public_url: str | None = Field(None, alias="HERALD_PUBLIC_URL")
    max_body_bytes: int = Field(1024 * 1024, ge=1024, alias="HERALD_MAX_BODY_BYTES")
    webhook_max_body_bytes: int = Field(5 * 1024 * 1024, ge=1024, alias="HERALD_WEBHOOK_MAX_BODY_BYTES")
    #: HMAC-SHA256 key of tokens and links: at least 32 characters (RFC 7518 3.2 asks for 256 bits).
    jwt_secret: str | None = Field(None, min_length=32, alias="HERALD_JWT_SECRET")
    credentials_key: str | None = Field(None, alias="HERALD_CREDENTIALS_KEY")
    log_level: str = Field("INFO", alias="HERALD_LOG_LEVEL")

    #: One sender (batches of 100, 20 envelopes prefetched) outruns the ingress on a small machine; each
    #: more is another Ray worker (about 100 MiB).
    senders: int = Field(1, ge=1, le=256, alias="HERALD_SENDERS")
    #: Tenant governor actors holding the rate limits' token buckets (tenants are spread over them).
    governor_shards: int = Field(1, ge=1, le=64, alias="HERALD_GOVERNOR_SHARDS")
    sender_batch: int = Field(100, ge=1, le=1000, alias="HERALD_SENDER_BATCH")
    sender_prefetch: int = Field(20, ge=1, le=1000, alias="HERALD_SENDER_PREFETCH")
    #: Each sender keeps a lane for notifications.high alone, so a low burst never holds one-time codes.
    sender_high_lane: bool = Field(True, alias="HERALD_SENDER_HIGH_LANE")
    #: Senders for notifications.high alone, beside the HERALD_SENDERS: a process whose event loop and
    #: database connections no burst keeps busy, so the system runs a one-time code as soon as it
    #: arrives (it is idle between codes). With RabbitMQ the other senders take high-priority messages
    #: only beyond its window, or while it is down. 0: the senders' reserved lanes alone.
    high_senders: int = Field(1, ge=0, le=64, alias="HERALD_HIGH_SENDERS")
    send_lease_s: float = Field(30.0, gt=0, alias="HERALD_SEND_LEASE_SECONDS")
    relay_batch: int = Field(1000, ge=1, le=10000, alias="HERALD_RELAY_BATCH")
    relay_poll_s: float = Field(0.5, gt=0, alias="HERALD_RELAY_POLL_SECONDS")
    #: With RabbitMQ, the API replica publishes the one-time codes it accepts itself, straight after the
    #: commit (engine.handoff); the relay publishes one only if that did not happen within 5 s.
    handoff: bool = Field(True, alias="HERALD_HANDOFF")
    #: How much the bulk processes lower their CPU priority (engine.runtime.yield_cpu): the senders beside
    #: dedicated ones, and the relay while the API hands the one-time codes off. 0: all alike.
    bulk_nice: int = Field(10, ge=0, le=19, alias="HERALD_BULK_NICE")
    queue_prefix: str = Field("", alias="HERALD_QUEUE_PREFIX")
    envelope_max_ids: int = Field(100, ge=1, le=1000, alias="HERALD_ENVELOPE_MAX_IDS")
    idempotency_ttl_s: int = Field(7 * 24 * 3600, ge=60, alias="HERALD_IDEMPOTENCY_TTL_SECONDS")
    retry_delays_s: CsvFloats = Field((10.0, 60.0, 300.0), alias="HERALD_RETRY_DELAYS")
    #: Cap of each notifications.dlq.<channel> queue (a copy for outside consumers; the oldest go first).
    dlq_max_length: int = Field(10_000, ge=1, le=10_000_000, alias="HERALD_DLQ_MAX_LENGTH")
    #: How often the relay refreshes the queue statistics and the queue_depth/queue_oldest_age gauges.
    queue_stats_s: float = Field(5.0, gt=0, le=3600, alias="HERALD_QUEUE_STATS_SECONDS")

    email_providers: CsvTuple = Field(("console",), alias="HERALD_EMAIL_PROVIDERS")
    sms_providers: CsvTuple = Field(("console",), alias="HERALD_SMS_PROVIDERS")
    push_providers: CsvTuple = Field((), alias="HERALD_PUSH_PROVIDERS")
    whatsapp_providers: CsvTuple = Field((), alias="HERALD_WHATSAPP_PROVIDERS")
    inapp_providers: CsvTuple = Field(("store",), alias="HERALD_INAPP_PROVIDERS")
    link_tracking: bool = Field(True, alias="HERALD_LINK_TRACKING")
    #: How long unsubscribe links signed with a tenant's previous key keep working after a rotation.
    unsubscribe_key_grace_s: int = Field(
        90 * 24 * 3600, ge=0, le=3650 * 24 * 3600, alias="HERALD_UNSUBSCRIBE_KEY_GRACE_SECONDS"
    )
    webhooks_allow_private: bool = Field(False, alias="HERALD_WEBHOOKS_ALLOW_PRIVATE")
    provider_event_retention_days: int = Field(30, ge=1, le=3650, alias="HERALD_PROVIDER_EVENT_RETENTION_DAYS")
    webhook_timeout_s: float = Field(10.0, gt=0, le=60, alias="HERALD_WEBHOOK_TIMEOUT_SECONDS")
    webhook_retry_base_s: float = Field(10.0, gt=0, alias="HERALD_WEBHOOK_RETRY_BASE_SECONDS")
    webhook_retry_for_s: float = Field(24 * 3600.0, gt=0, alias="HERALD_WEBHOOK_RETRY_FOR_SECONDS")
    webhook_disable_after_s: float = Field(3 * 24 * 3600.0, gt=0, alias="HERALD_WEBHOOK_DISABLE_AFTER_SECONDS")
    webhook_concurrency: int = Field(16, ge=1, le=512, alias="HERALD_WEBHOOK_CONCURRENCY")
    analytics_rate_window_days: int = Field(7, ge=1, le=366, alias="HERALD_ANALYTICS_RATE_WINDOW_DAYS")
    email_from: str = Field("Herald <no-reply@herald.local>", alias="HERALD_EMAIL_FROM")
    #: Tenant config keys (dotted paths) a tenant admin may change on its own tenant.
    tenant_editable_keys: CsvTuple = Field(DEFAULT_TENANT_EDITABLE, alias="HERALD_TENANT_EDITABLE_KEYS")

    routing_table: Path | None = Field(None, alias="HERALD_ROUTING_TABLE")
    routing_refresh_s: float = Field(1.0, gt=0, le=60, alias="HERALD_ROUTING_REFRESH_SECONDS")
    #: Seconds between health checks of a provider account whose driver has one (0: none); the routing
    #: table's ``breaker.check_s`` overrides it per provider.
    health_check_s: float = Field(30.0, ge=0, le=3600, alias="HERALD_HEALTH_CHECK_SECONDS")
    #: How often the control actor persists the monthly sends per provider account (volume price tiers).
    volume_flush_s: float = Field(5.0, gt=0, le=3600, alias="HERALD_VOLUME_FLUSH_SECONDS")

    object_store_mb: int = Field(256, ge=75, alias="HERALD_RAY_OBJECT_STORE_MB")
    #: How HERALD_HTTP_PORT reaches the ingress replicas (serve_app/ingress.py).
    ingress: Literal["haproxy", "proxy"] = Field("haproxy", alias="HERALD_INGRESS")
    #: Ingress replicas; none: one per core.
    ingress_replicas: int | None = Field(None, ge=1, le=64, alias="HERALD_INGRESS_REPLICAS")

    @field_validator(
        "retry_delays_s",
        "email_providers",
        "sms_providers",
        "push_providers",
        "whatsapp_providers",
        "inapp_providers",
        "tenant_editable_keys",
        mode="before",
    )
    @classmethod
    def _split_csv(cls, value: Any) -> Any:
        if isinstance(value, str):
            return tuple(v.strip() for v in value.split(",") if v.strip())
        return value

    @field_validator("tenant_editable_keys", mode="after")
    @classmethod
    def _config_keys(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        unknown = check_paths(value)
        if unknown:
            raise ValueError(f"not keys of the tenant config: {', '.join(unknown)}")
        return value

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # load_settings reads the environment (the process's, or a given mapping) through EnvironSource
        # and passes the values in, so a test's mapping is never mixed with the process environment.
        return (init_settings,)

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


#: Settings whose value is never shown (``herald config``, error messages).
SECRET_SETTINGS = frozenset({"HERALD_JWT_SECRET", "HERALD_CREDENTIALS_KEY"})
#: Settings holding a URL that may carry a password, shown with the password masked.
URL_SETTINGS = frozenset({"DATABASE_URL", "AMQP_URL", "REDIS_URL", "RAY_ADDRESS"})


def shown_value(name: str, value: str) -> str:
    """How a variable's raw value may be shown: secrets masked, passwords in URLs masked."""
    if name in SECRET_SETTINGS:
        return "***" if value else ""
    if name in URL_SETTINGS:
        from engine.storage.dsn import redact_dsn

        return redact_dsn(value)
    return value


class EnvironSource(EnvSettingsSource):
    """pydantic-settings' environment source over a given mapping (default: the process environment).

    List settings are ``NoDecode``: they arrive as text and the CSV validator splits them.

    Raises:
        ConfigurationError: a value cannot be decoded; the message names the variable.
    """

    def __init__(self, settings_cls: type[BaseSettings], environ: Mapping[str, str] | None = None) -> None:
        self._environ = os.environ if environ is None else environ
        super().__init__(settings_cls)

    def _load_env_vars(self) -> Mapping[str, str | None]:
        ignore_empty = self.env_ignore_empty
        return {
            (k if self.case_sensitive else k.lower()): v
            for k, v in self._environ.items()
            if not (ignore_empty and v == "")
        }

    def prepare_field_value(self, field_name: str, field: FieldInfo, value: Any, value_is_complex: bool) -> Any:
        try:
            return super().prepare_field_value(field_name, field, value, value_is_complex)
        except ValueError as err:
            name = field.alias or field_name
            shown = shown_value(name, str(value))
            raise ConfigurationError(f"invalid configuration: {name}={shown!r}: {err}") from None


def _describe(err: ValidationError, environ: Mapping[str, str]) -> str:
    problems = []
    for e in err.errors():
        loc = e["loc"]
        if not loc:  # a check across several settings: its message names them
            problems.append(f"settings: {e['msg']}")
            continue
        head = str(loc[0])
        name = Settings.model_fields[head].alias or head if head in Settings.model_fields else head
        item = f" (item {int(loc[1]) + 1})" if len(loc) > 1 and isinstance(loc[1], int) else ""
        shown = shown_value(name, environ.get(name, ""))
        problems.append(f"{name}={shown!r}{item}: {e['msg']}")
    return "invalid configuration: " + "; ".join(problems)


def _as_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, tuple):
        return ",".join(_as_text(v) for v in value)
    return str(value)


def settings_view(settings: Settings, environ: Mapping[str, str] | None = None) -> list[tuple[str, str, bool]]:
    """Every setting as ``(variable, value as it would be written, set in the environment)``, secrets masked."""
    environ = os.environ if environ is None else environ
    rows = []
    for name, field in Settings.model_fields.items():
        variable = field.alias or name
        rows.append((variable, shown_value(variable, _as_text(getattr(settings, name))), bool(environ.get(variable))))
    return rows


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    """Read settings from ``env`` (default: the process environment) and nothing else.

    Empty variables count as unset.

    Raises:
        ConfigurationError: a variable has a bad value; the message names it.
    """
    environ = os.environ if env is None else env
    values = EnvironSource(Settings, environ)()
    try:
        return Settings(**values)
    except ValidationError as err:
        raise ConfigurationError(_describe(err, environ)) from None
