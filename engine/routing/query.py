"""What routing needs to know about one message, read from the message and its tenant's config."""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import phonenumbers

from engine.channels import Channel

from .table import ANY, config_value


@dataclass(frozen=True, slots=True)
class RouteQuery:
    """One message as routing sees it (hashable: plans are cached by it)."""

    channel: Channel
    tenant: str
    region: str  #: the tenant's region (providers tagged with regions must list it)
    destination: str  #: the phone number's country, the email routing region, or "*"
    category: str | None
    priority: str
    configured: tuple[str, ...]  #: the channel's providers on this deployment, in failover order
    allow: tuple[str, ...] | None = None  #: the tenant's allow-list, in its order; None: no restriction
    push_platform: str | None = None
    own_credentials: frozenset[str] = frozenset()  #: providers the tenant brings its own account for
    price_category: str | None = None  #: WhatsApp: the template category Meta bills by
    tenant_routing: str = ""  #: key of the tenant's routing overrides (see table.tenant_routing_key)
    pinned: str | None = None  #: the provider whose last attempt timed out after sending (tried first)
    only: str | None = None  #: the provider a DLQ replay named (``messages.pinned_provider``): no other


def allow_list(tenant_config: Any, channel: Channel) -> tuple[str, ...] | None:
    """The tenant's allow-list for a channel: ``providers.<channel>.allow``, or a bare list (the older
    shape). None (or an empty list) means every configured provider. ``tenant_config`` is the stored
    document or its typed model (``providers.allowed(channel)``)."""
    providers = config_value(tenant_config, "providers")
    allowed = getattr(providers, "allowed", None)
    if callable(allowed):
        typed: tuple[str, ...] | None = allowed(channel)
        return typed or None
    entry = providers.get(channel.value) if isinstance(providers, Mapping) else None
    names = entry.get("allow") if isinstance(entry, Mapping) else entry
    if not isinstance(names, list | tuple) or not names:
        return None
    return tuple(dict.fromkeys(str(n) for n in names))


def email_region(tenant_config: Any, tenant_region: str) -> str:
    """Where email is priced: the tenant's ``routing.email_region``, else its region."""
    routing = config_value(tenant_config, "routing")
    chosen = config_value(routing, "email_region")
    return str(chosen) if chosen else tenant_region


@functools.lru_cache(maxsize=65536)
def phone_country(number: str | None) -> str:
    """ISO 3166 alpha-2 country of an E.164 number ("GB"), or "*" when it cannot be told."""
    if not number:
        return ANY
    try:
        parsed = phonenumbers.parse(number.removeprefix("whatsapp:"), None)
    except phonenumbers.NumberParseException:
        return ANY
    region = phonenumbers.region_code_for_number(parsed)
    return region if region and region != "ZZ" else ANY


def destination(channel: Channel, to: Mapping[str, Any], *, email_region_: str) -> str:
    if channel in (Channel.SMS, Channel.WHATSAPP):
        return phone_country(to.get("phone"))
    if channel is Channel.EMAIL:
        return email_region_
    return ANY
