"""Building the engine's parts from settings: the one place that knows which adapter backs which port.

Actors and deployments receive a :class:`RuntimeConfig` (picklable) and open their own
:class:`Components` in their own process.
"""

from __future__ import annotations

import gc
import logging
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg

from engine.broker import Broker
from engine.broker.factory import make_broker
from engine.channels import Channel
from engine.delivery import Driver, DriverFactory
from engine.errors import ConfigurationError
from engine.handoff import Handoff, HandoffOptions
from engine.idempotency import IdempotencyCache
from engine.settings import Settings
from engine.storage.repository import Repository, create_pool
from engine.templating import TemplateCatalog
from engine.tenant_templates import TenantTemplateCache

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class RuntimeConfig:
    settings: Settings
    database_url: str  #: resolved: DATABASE_URL, or the embedded server's socket DSN
    secret: str
    env: Mapping[str, str] = field(default_factory=dict)  #: provider settings (HERALD_*, AWS_*)

    @classmethod
    def capture(cls, settings: Settings, database_url: str) -> RuntimeConfig:
        provider_env = {k: v for k, v in os.environ.items() if k.startswith(("HERALD_", "AWS_"))}
        return cls(settings, database_url, settings.secret(), provider_env)

    def backends(self) -> dict[str, str]:
        s = self.settings
        return {
            "database": "postgres (DATABASE_URL)" if s.database_url else f"embedded postgres ({s.data_dir / 'pg'})",
            "broker": "rabbitmq (AMQP_URL)" if s.amqp_url else "postgres queue table",
            "idempotency": "postgres (the accept's insert)",
            "compute": f"ray cluster ({s.ray_address})" if s.ray_address else "local ray",
            **{f"{c.value} providers": ",".join(s.providers(c)) or "none" for c in Channel},
        }


def driver_env(settings: Settings, env: Mapping[str, str]) -> dict[str, str]:
    """Provider settings as drivers read them: ``env`` with the data directory and the public URL the
    settings resolved (status callback URLs are built from ``HERALD_PUBLIC_URL``)."""
    merged = {**env, "HERALD_DATA_DIR": str(settings.data_dir)}
    if settings.public_url:
        merged["HERALD_PUBLIC_URL"] = settings.public_url
    return merged


def provider_chains(settings: Settings, env: Mapping[str, str], factory: DriverFactory) -> dict[Channel, list[Driver]]:
    """Each channel's drivers in failover order, built by ``factory`` (the composition root's).

    Raises:
        ConfigurationError: a listed provider is unknown or misses its settings (at start-up).
    """
    merged = driver_env(settings, env)
    return {channel: [factory(channel, p, merged) for p in settings.providers(channel)] for channel in Channel}


async def provider_report(
    settings: Settings, env: Mapping[str, str], factory: DriverFactory, known: Iterable[tuple[Channel, str]]
) -> list[dict[str, str]]:
    """Every ``known`` provider: whether the channel uses it, and whether its settings are complete
    (the missing variable when not)."""
    merged = driver_env(settings, env)
    report = []
    for channel, provider in sorted(known, key=lambda k: (k[0].value, k[1])):
        chain = settings.providers(channel)
        entry = {
            "channel": channel.value,
            "provider": provider,
            "enabled": provider in chain,
            "failover_rank": chain.index(provider) + 1 if provider in chain else None,
        }
        try:
            driver = factory(channel, provider, merged)
        except ConfigurationError as err:
            entry.update(status="unconfigured", detail=str(err))
        else:
            entry.update(status="configured")
            await driver.aclose()
        report.append(entry)
    return report


@dataclass(slots=True)
class Components:
    pool: asyncpg.Pool
    repo: Repository
    catalog: TemplateCatalog
    tenant_templates: TenantTemplateCache
    cache: IdempotencyCache | None = None
    broker: Broker | None = None

    async def aclose(self) -> None:
        if self.broker is not None:
            await self.broker.close()
        if self.cache is not None:
            await self.cache.aclose()
        await self.pool.close()


def settle_heap() -> None:
    """Call once a long-lived process has opened its parts (modules, templates, pools, clients): collect,
    then leave every object still alive out of the cyclic collector's full passes (``gc.freeze``), which
    otherwise walk all of them again every few hundred thousand allocations: under load, 5-6 % of a
    sender's CPU and 15-20 % of each relay pass over 1,000 outbox rows.
    """
    gc.collect()
    gc.freeze()


def yield_cpu(niceness: int) -> int:
    """Lower every thread of this process's CPU priority by ``niceness`` (Linux keeps one per thread, and
    a thread started later takes its starter's): a process of bulk work calls it so that, on a machine
    both share, the one-time codes' path (API replica, dedicated senders) gets the CPU first whenever both
    want it. Returns how many threads it changed."""
    if niceness <= 0:
        return 0
    tasks = Path("/proc/self/task")
    tids = [int(t.name) for t in tasks.iterdir()] if tasks.is_dir() else [0]
    changed = 0
    for tid in tids:
        try:
            os.setpriority(os.PRIO_PROCESS, tid, min(19, os.getpriority(os.PRIO_PROCESS, tid) + niceness))
        except (ProcessLookupError, PermissionError):  # a thread that ended meanwhile
            continue
        changed += 1
    return changed


async def open_components(
    config: RuntimeConfig,
    *,
    broker: bool = False,
    cache: bool = False,
    pool_size: int = 5,
    high_only: bool = False,
    generic_plans: bool = False,
) -> Components:
    """``high_only``: the broker of a dedicated high-priority sender (it consumes ``notifications.high``
    alone, ahead of the other senders); ``generic_plans``: see :func:`create_pool`."""
    s = config.settings
    pool = await create_pool(config.database_url, min_size=1, max_size=pool_size, generic_plans=generic_plans)
    tenant_templates = TenantTemplateCache(pool)
    catalog = TemplateCatalog(s.templates_root, tenants=tenant_templates)
    tenant_templates.catalog = catalog
    parts = Components(pool=pool, repo=Repository(pool), catalog=catalog, tenant_templates=tenant_templates)
    if cache and s.redis_url:
        from engine.cache import RedisIdempotencyCache  # redis's client, only where Redis is configured

        parts.cache = RedisIdempotencyCache.from_url(s.redis_url)
    if broker:
        parts.broker = make_broker(
            s.amqp_url,
            config.database_url,
            queue_prefix=s.queue_prefix,
            prefetch=s.sender_prefetch,
            lease_s=s.send_lease_s,
            dlq_max_length=s.dlq_max_length,
            high_only=high_only,
        )
        await parts.broker.connect()
    return parts


def hands_off(s: Settings) -> bool:
    """Whether the API replicas publish the one-time codes they accept themselves (the relay does not)."""
    return s.handoff and s.amqp_url is not None


def open_handoff(config: RuntimeConfig, repo: Repository) -> Handoff | None:
    """The API's hand-off of one-time codes (HERALD_HANDOFF), with RabbitMQ only: the Postgres queue's
    publish is one more statement on the same database, from one more pool, and stays the relay's alone.
    Its broker connects at the first publish, so the API starts and accepts while RabbitMQ is down."""
    s = config.settings
    if not hands_off(s):
        return None
    broker = make_broker(s.amqp_url, config.database_url, queue_prefix=s.queue_prefix, dlq_max_length=s.dlq_max_length)
    return Handoff(repo, broker, HandoffOptions(envelope_max_ids=s.envelope_max_ids))
