"""Recipients: preferences per category and channel, the tenant's suppression list by category, and replies
of STOP / START / HELP on SMS and WhatsApp.

- Preferences (``PUT/GET /api/recipients/{user_id}/preferences``): ``{"categories": {"marketing":
  {"email": false, "sms": true}}}`` for ``to.user_id``. What is not said is allowed. The tenant's
  required categories (``preferences.required_categories``: ``auth``, ``transactional``) cannot be
  opted out of: a PUT that tries is a 422, and a stored opt-out of a category made required later is
  ignored.
- Suppressions (``GET/POST/DELETE /api/suppressions``): ``{"channel", "address", "category"?,
  "reason"}``; no category stops every category (a dead address), a category only that one (an
  unsubscribe). A number is one address for SMS and WhatsApp alike.
- A STOP reply suppresses the number for every category the tenant does not require (the
  :data:`NON_REQUIRED` entry); START lifts that entry and nothing else (a number that bounced stays
  suppressed); HELP is answered with the tenant's help text.

The senders' claim finds the suppression entries of each message's address; :func:`suppression_applies`
and :class:`RecipientGate` decide with the tenant's required categories, one statement per batch.
"""

from __future__ import annotations

import re
import unicodedata
import uuid
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, EmailStr, Field, StrictBool, TypeAdapter, ValidationError
from pydantic_core import PydanticCustomError

from engine.channels import Channel
from engine.lifecycle.cursor import Position, decode_cursor, encode_cursor
from engine.models import FieldError, Tenant, valid_phone
from engine.problems import ApiProblem, from_pydantic
from engine.storage.recipients_store import RecipientStore, SuppressionQuery, SuppressionRow
from engine.tenant_config.base import CategoryName

#: The category of a STOP reply's entry: every category the tenant does not require. No real category
#: can be named so (category names start with a letter or digit).
NON_REQUIRED = "*non_required"
SUPPRESSION_PREFIX = "sup_"
MAX_PAGE = 200
_CURSOR_KIND = "suppressions"

#: The address kind a channel sends to (in-app messages have none: preferences cover them).
KIND_OF: dict[Channel, str] = {
    Channel.EMAIL: "email",
    Channel.SMS: "phone",
    Channel.WHATSAPP: "phone",
    Channel.PUSH: "device_token",
}
CHANNELS_OF: dict[str, tuple[Channel, ...]] = {
    "email": (Channel.EMAIL,),
    "phone": (Channel.SMS, Channel.WHATSAPP),
    "device_token": (Channel.PUSH,),
}
_EMAIL = TypeAdapter(EmailStr)
UserId = Annotated[str, Field(min_length=1, max_length=255)]


# -- the rules -------------------------------------------------------------------------------------


def preference_allows(
    categories: Mapping[str, Mapping[str, bool]], category: str | None, channel: Channel, required: Collection[str]
) -> bool:
    """Whether a recipient's preferences let a message of ``category`` through on ``channel``."""
    if category is None or category in required:
        return True
    return categories.get(category, {}).get(channel.value, True) is not False


def suppression_applies(entry_category: str | None, message_category: str | None, required: Collection[str]) -> bool:
    """Whether a suppression entry stops a message of ``message_category``: an every-category entry (a dead
    address) always does; no other stops a required category (unsubscribes and STOP replies leave one-time
    codes flowing, even an unsubscribe from a message of a category made required later)."""
    if entry_category is None:
        return True
    if message_category is not None and message_category in required:
        return False
    return entry_category in (NON_REQUIRED, message_category)


def suppressed_by(
    entry_categories: Collection[str | None], message_category: str | None, required: Collection[str]
) -> bool:
    """Whether any of an address's suppression entries (``CLAIM_SUPPRESSION_CATEGORIES``) stops the message."""
    return any(suppression_applies(c, message_category, required) for c in entry_categories)


class Keyword(StrEnum):
    STOP = "stop"
    START = "start"
    HELP = "help"


_KEYWORDS: dict[str, Keyword] = {
    **dict.fromkeys(
        ("stop", "stopall", "stop all", "unsubscribe", "cancel", "end", "quit", "optout", "opt out", "revoke", "arret"),
        Keyword.STOP,
    ),
    **dict.fromkeys(("start", "unstop", "yes", "optin", "opt in", "subscribe"), Keyword.START),
    **dict.fromkeys(("help", "info", "aide"), Keyword.HELP),
}
_SEPARATORS = re.compile(r"[\s_-]+")


def inbound_keyword(text: str | None) -> Keyword | None:
    """The keyword an inbound SMS or WhatsApp message is, when the whole message is one (``STOP``,
    `` Stop. ``, ``opt-out``, ``ARRÊT``); None for anything else (``stop sending me these`` is a message)."""
    if not text or len(text) > 40:
        return None
    plain = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    plain = _SEPARATORS.sub(" ", plain.strip().strip(".!?,;:'\"*()[] ").casefold()).strip()
    return _KEYWORDS.get(plain)


# -- preferences -------------------------------------------------------------------------------------


class PreferencesBody(BaseModel):
    """``PUT /api/recipients/{user_id}/preferences``: replaces the recipient's preferences."""

    model_config = ConfigDict(extra="forbid")

    categories: dict[CategoryName, dict[Channel, StrictBool]] = Field(
        default_factory=dict, max_length=64, description="per category, per channel: false opts out"
    )


class PreferencesView(BaseModel):
    user_id: str
    categories: dict[str, dict[str, bool]]
    required_categories: list[str] = Field(description="these always go, whatever the preferences say")
    updated_at: datetime | None


@dataclass(frozen=True, slots=True)
class RecipientCheck:
    """One claimed message, as the preference check needs it."""

    tenant: Tenant
    user_id: str | None
    category: str | None
    channel: Channel


class RecipientGate:
    """The senders' preference check: one statement per batch."""

    def __init__(self, store: RecipientStore) -> None:
        self.store = store

    async def refused(self, checks: Mapping[Any, RecipientCheck]) -> dict[Any, str]:
        """The messages (by the caller's key) that the recipient's preferences stop, with the reason to
        record on the ``suppressed`` message."""
        asked = {(c.tenant.id, c.user_id) for c in checks.values() if c.user_id and c.category}
        found = await self.store.preferences_of(sorted(asked, key=str))
        out = {}
        for key, c in checks.items():
            prefs = found.get((c.tenant.id, c.user_id or ""))
            required = c.tenant.config.preferences.required_categories
            if prefs and not preference_allows(prefs, c.category, c.channel, required):
                out[key] = f"recipient preference: {c.category} off on {c.channel.value}"
        return out


# -- suppressions ----------------------------------------------------------------------------------


class SuppressionEntry(BaseModel):
    """``POST /api/suppressions``."""

    model_config = ConfigDict(extra="forbid")

    channel: Literal["email", "sms", "whatsapp", "push"]
    address: str = Field(min_length=1, max_length=4096, description="email address, E.164 number or push token")
    category: CategoryName | None = Field(None, description="only this category; omitted: every category")
    reason: str = Field(min_length=1, max_length=200)


class SuppressionView(BaseModel):
    id: str
    channel: str = Field(description="the first channel the address serves (sms for a number)")
    channels: list[str] = Field(description="every channel the entry stops")
    address: str
    category: str | None
    scope: Literal["all", "category", "non_required"] = Field(
        description="all: every category; category: only that one; non_required: every category the tenant "
        "does not require (a STOP reply)"
    )
    reason: str | None
    created_at: datetime


class SuppressionPage(BaseModel):
    items: list[SuppressionView]
    next_cursor: str | None = None


@dataclass(frozen=True, slots=True)
class InboundOutcome:
    keyword: Keyword | None
    changed: bool  #: the suppression list changed
    reply: str | None = None  #: what to answer the sender (HELP)


class RecipientService:
    def __init__(self, store: RecipientStore) -> None:
        self.store = store

    async def put_preferences(
        self, tenant: Tenant, user_id: str, body: PreferencesBody | Mapping[str, Any], *, actor: str
    ) -> PreferencesView:
        """Raises: ApiProblem 422 naming the field (a required category opted out of included)."""
        _check_user_id(user_id)
        prefs = _parse(PreferencesBody, body)
        required = tenant.config.preferences.required_categories
        errors = [
            FieldError(("body", "categories", cat, ch.value), f"{cat} is a required category: no opting out")
            for cat, channels in prefs.categories.items()
            for ch, on in channels.items()
            if cat in required and not on
        ]
        if errors:
            raise ApiProblem(422, "required categories cannot be opted out of", errors=errors)
        doc = {cat: {ch.value: on for ch, on in channels.items()} for cat, channels in prefs.categories.items()}
        updated = await self.store.put_preferences(tenant.id, user_id, doc, actor=actor)
        return PreferencesView(user_id=user_id, categories=doc, required_categories=list(required), updated_at=updated)

    async def get_preferences(self, tenant: Tenant, user_id: str) -> PreferencesView:
        """A recipient with no preferences stored has none (everything allowed), never a 404."""
        _check_user_id(user_id)
        found = await self.store.preferences(tenant.id, user_id)
        categories, updated = found if found else ({}, None)
        required = list(tenant.config.preferences.required_categories)
        return PreferencesView(user_id=user_id, categories=categories, required_categories=required, updated_at=updated)

    async def add_suppression(
        self, tenant: Tenant, body: SuppressionEntry | Mapping[str, Any], *, actor: str
    ) -> tuple[SuppressionView, bool]:
        """``(entry, created)``: the same entry twice is stored once. Raises: ApiProblem 422."""
        entry = _parse(SuppressionEntry, body)
        if tenant.config.preferences.is_required(entry.category):
            raise ApiProblem(
                422,
                "a required category cannot be suppressed on its own",
                errors=[
                    FieldError(
                        ("body", "category"),
                        f"{entry.category} is a required category: omit category to stop every category",
                    )
                ],
            )
        channel = Channel(entry.channel)
        address = normalized_address(channel, entry.address, ("body", "address"))
        row, added = await self.store.add_suppression(
            tenant.id, KIND_OF[channel], address, entry.category, entry.reason, actor=actor
        )
        return _view(row), added

    async def list_suppressions(
        self,
        tenant: Tenant,
        *,
        channel: str | None = None,
        address: str | None = None,
        cursor: str | None = None,
        limit: int = 50,
    ) -> SuppressionPage:
        """Newest first. Raises: ApiProblem 422 (``query.channel``, ``query.address``, ``query.limit``...)."""
        if not 1 <= limit <= MAX_PAGE:
            raise ApiProblem(422, "limit out of range", errors=[FieldError(("query", "limit"), f"1 to {MAX_PAGE}")])
        kind, normal = None, None
        if channel is not None:
            chosen = _channel(channel, ("query", "channel"))
            kind = KIND_OF[chosen]
            if address is not None:
                normal = normalized_address(chosen, address, ("query", "address"))
        elif address is not None:
            raise ApiProblem(
                422, "address needs channel", errors=[FieldError(("query", "address"), "give channel too")]
            )
        after = decode_cursor(_CURSOR_KIND, cursor)
        query = SuppressionQuery(tenant.id, kind, normal)
        rows = await self.store.page(query, (after.at, after.id) if after else None, limit + 1)
        last = rows[limit - 1] if len(rows) > limit else None
        return SuppressionPage(
            items=[_view(r) for r in rows[:limit]],
            next_cursor=encode_cursor(_CURSOR_KIND, Position(last.created_at, last.id)) if last else None,
        )

    async def remove_suppression(self, tenant: Tenant, public_id: str, *, actor: str) -> SuppressionView:
        """Raises: ApiProblem 404 for a malformed id or another tenant's entry."""
        found = None
        suppression_id = _parse_id(public_id)
        if suppression_id is not None:
            found = await self.store.remove(tenant.id, suppression_id, actor=actor)
        if found is None:
            raise ApiProblem(404, "no such suppression")
        return _view(found)

    async def inbound(
        self, tenant: Tenant, channel: Channel, number: str, text: str | None, *, help_text: str | None = None
    ) -> InboundOutcome:
        """Act on an inbound SMS or WhatsApp message from ``number`` (verified webhook, E.164).

        Raises: ValueError for a channel that has no inbound messages or a number that is not one.
        """
        if KIND_OF.get(channel) != "phone":
            raise ValueError(f"no inbound keywords on {channel.value}")
        keyword = inbound_keyword(text)
        address = valid_phone(number)
        actor = f"inbound:{channel.value}"
        if keyword is Keyword.STOP:
            _, added = await self.store.add_suppression(
                tenant.id, "phone", address, NON_REQUIRED, f"{channel.value} STOP reply", actor=actor
            )
            return InboundOutcome(keyword, added)
        if keyword is Keyword.START:
            removed = await self.store.remove_address(tenant.id, "phone", address, NON_REQUIRED, actor=actor)
            return InboundOutcome(keyword, removed is not None)
        if keyword is Keyword.HELP:
            return InboundOutcome(keyword, False, help_text)
        return InboundOutcome(None, False)


def normalized_address(channel: Channel, address: str, loc: tuple[str, ...]) -> str:
    """The address as the claim compares it: email lower-cased, numbers in E.164, tokens as given.

    Raises: ApiProblem 422 at ``loc``.
    """
    try:
        if channel is Channel.EMAIL:
            return str(_EMAIL.validate_python(address.strip())).lower()
        if KIND_OF.get(channel) == "phone":
            return valid_phone(address)
    except (ValidationError, PydanticCustomError) as err:
        msg = err.errors()[0]["msg"] if isinstance(err, ValidationError) else str(err)
        raise ApiProblem(422, f"not a valid {channel.value} address", errors=[FieldError(loc, msg)]) from None
    if channel is Channel.PUSH and len(address) >= 8:
        return address
    raise ApiProblem(422, f"not a valid {channel.value} address", errors=[FieldError(loc, "not a push token")])


def _view(row: SuppressionRow) -> SuppressionView:
    channels = CHANNELS_OF.get(row.kind, ())
    scope = "all" if row.category is None else "non_required" if row.category == NON_REQUIRED else "category"
    return SuppressionView(
        id=f"{SUPPRESSION_PREFIX}{row.id.hex}",
        channel=channels[0].value if channels else row.kind,
        channels=[c.value for c in channels],
        address=row.address,
        category=None if row.category in (None, NON_REQUIRED) else row.category,
        scope=scope,
        reason=row.reason,
        created_at=row.created_at,
    )


def _parse_id(public_id: str) -> uuid.UUID | None:
    raw = public_id.removeprefix(SUPPRESSION_PREFIX)
    if not public_id.startswith(SUPPRESSION_PREFIX) or len(raw) != 32:
        return None
    try:
        return uuid.UUID(hex=raw)
    except ValueError:
        return None


def _channel(value: str, loc: tuple[str, ...]) -> Channel:
    try:
        channel = Channel(value)
    except ValueError:
        channel = None
    if channel is None or channel not in KIND_OF:
        known = ", ".join(sorted(k.value for k in KIND_OF))
        raise ApiProblem(422, "unknown channel", errors=[FieldError(loc, f"one of {known}")])
    return channel


def _check_user_id(user_id: str) -> None:
    if not 1 <= len(user_id) <= 255:
        raise ApiProblem(422, "bad user id", errors=[FieldError(("path", "user_id"), "1 to 255 characters")])


def _parse(model: type[Any], value: Any) -> Any:
    if isinstance(value, model):
        return value
    if not isinstance(value, Mapping):
        raise ApiProblem(422, "the body must be an object", errors=[FieldError(("body",), "expected an object")])
    try:
        return model.model_validate(dict(value))
    except ValidationError as err:
        errors = from_pydantic(err.errors(include_url=False))
        raise ApiProblem(422, "the request is not valid", errors=errors) from None
