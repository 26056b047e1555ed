"""The tenant endpoints' rules: create, read, page, and merge-patch tenants, answering with ApiProblem.

The platform operator changes any key of any tenant (``/admin/tenants``); a tenant admin reads its own
tenant and changes the keys the platform's :class:`~engine.tenant_config.EditPolicy` allows
(``/api/tenant``). A change is a JSON merge patch (RFC 7396) of the tenant's view (``name``, ``config``),
validated after the merge, written with a bumped ``config_version`` and an audit record holding before,
after and the actor, in one transaction. Every route is one call here.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable, Collection, Mapping
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from engine.channels import Channel
from engine.models import FieldError
from engine.problems import ApiProblem, from_pydantic
from engine.tenant_config import (
    MANAGED_KEYS,
    ConfigInvalid,
    ConfigProblem,
    EditPolicy,
    TenantConfig,
    changed_paths,
    merge_patch,
    read_stored,
    unknown_providers,
    validate_config,
)
from engine.tenant_config.schema import REGION_PATTERN
from engine.tenant_config.store import TenantChange, TenantRecord, TenantStore

SLUG_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,62}$"
MAX_PAGE = 200
_CONFIG = ("body", "config")


class CreateTenantRequest(BaseModel):
    """``POST /admin/tenants``."""

    model_config = ConfigDict(extra="forbid")

    slug: str = Field(pattern=SLUG_PATTERN, description="the tenant's id in tokens and the API, e.g. t_001")
    name: str | None = Field(None, min_length=1, max_length=200, description="defaults to the slug")
    region: str | None = Field(None, pattern=REGION_PATTERN, description="shortcut for config.region")
    config: dict[str, Any] = Field(default_factory=dict, description="the config document; omitted keys default")


class TenantPatch(BaseModel):
    """``PATCH /admin/tenants/{slug}`` and ``PATCH /api/tenant`` (``application/merge-patch+json``): a merge
    patch of the tenant's view. ``null`` inside ``config`` resets a key to its default."""

    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(None, min_length=1, max_length=200)
    config: dict[str, Any] | None = None


class TenantView(BaseModel):
    """A tenant as the API shows it (sealed credentials appear by name only)."""

    model_config = ConfigDict(frozen=True)

    slug: str
    name: str
    config: TenantConfig
    config_version: int = Field(description="moves with every change; send it back in If-Match to patch safely")
    credentials: list[str] = Field(description="<channel>:<provider> accounts the tenant brought (names only)")
    editable: list[str] = Field(description="config keys a tenant admin may change")
    created_at: datetime
    updated_at: datetime

    @property
    def etag(self) -> str:
        return f'"{self.config_version}"'


class TenantPage(BaseModel):
    """``GET /admin/tenants``: tenants in slug order; pass ``next_cursor`` back as ``cursor`` for more."""

    items: list[TenantView]
    next_cursor: str | None = None


class TenantService:
    def __init__(
        self,
        store: TenantStore,
        *,
        policy: EditPolicy | None = None,
        known_providers: Mapping[Channel, Collection[str]] | None = None,
        on_change: Callable[[str], None] | None = None,
    ) -> None:
        """``known_providers``: the driver registry's names per channel (allow-lists naming others are 422);
        ``on_change``: told the slug after every change (this process's caches can drop the tenant)."""
        self.store = store
        self.policy = policy or EditPolicy()
        self.known_providers = known_providers
        self.on_change = on_change

    # -- platform operator -------------------------------------------------------------------------

    async def create(self, body: Any, *, actor: str) -> TenantView:
        """Raises: ApiProblem 422 (the field at fault), 409 (the slug is taken)."""
        request: CreateTenantRequest = _parse(CreateTenantRequest, body)
        doc = dict(request.config)
        if request.region is not None:
            if doc.get("region", request.region) != request.region:
                raise ApiProblem(422, "region and config.region differ", errors=[_err(("body", "region"), "differs")])
            doc["region"] = request.region
        _refuse_managed(doc)
        config = self._validate(doc, TenantConfig())
        name = request.name or request.slug
        audit = {"after": {"name": name, "config": config.document()}}
        record = await self.store.create(request.slug, name, config.region, config.stored(), actor=actor, audit=audit)
        if record is None:
            raise ApiProblem(409, f"a tenant {request.slug!r} already exists")
        self._changed(record.slug)
        return self._view(record)

    async def get(self, slug: str) -> TenantView:
        """Raises: ApiProblem 404."""
        record = await self.store.get(slug)
        if record is None:
            raise ApiProblem(404, f"no tenant {slug!r}")
        return self._view(record)

    async def patch(self, slug: str, body: Any, *, actor: str, if_match: str | None = None) -> TenantView:
        """Any key of any tenant.

        Raises: ApiProblem 404, 412 (``if_match`` is not the current version), 422 (the field at fault).
        """
        return await self._patch(slug, body, actor=actor, if_match=if_match, own=False)

    async def list(self, *, cursor: str | None = None, limit: int = 50) -> TenantPage:
        """Raises: ApiProblem 422 for a cursor this service did not hand out or a limit out of 1..200."""
        if not 1 <= limit <= MAX_PAGE:
            raise ApiProblem(422, "limit out of range", errors=[_err(("query", "limit"), f"must be 1 to {MAX_PAGE}")])
        after = _decode_cursor(cursor) if cursor else None
        records = await self.store.page(after, limit + 1)
        items = [self._view(r) for r in records[:limit]]
        more = len(records) > limit
        return TenantPage(items=items, next_cursor=_encode_cursor(records[limit - 1].slug) if more else None)

    # -- tenant admin, on its own tenant -----------------------------------------------------------

    async def get_own(self, tenant: str) -> TenantView:
        """Raises: ApiProblem 401 when the token's tenant does not exist."""
        record = await self.store.get(tenant)
        if record is None:
            raise ApiProblem(401, f"unknown tenant {tenant!r}")
        return self._view(record)

    async def patch_own(self, tenant: str, body: Any, *, actor: str, if_match: str | None = None) -> TenantView:
        """The keys the platform lets a tenant admin change.

        Raises: ApiProblem 401, 403 (a key only the platform may change, named), 412, 422.
        """
        return await self._patch(tenant, body, actor=actor, if_match=if_match, own=True)

    # -- steps -------------------------------------------------------------------------------------

    async def _patch(self, slug: str, body: Any, *, actor: str, if_match: str | None, own: bool) -> TenantView:
        patch: TenantPatch = _parse(TenantPatch, body)
        for key in ("name", "config"):
            if key in patch.model_fields_set and getattr(patch, key) is None:
                raise ApiProblem(422, f"{key} cannot be removed", errors=[_err(("body", key), "cannot be null")])
        _refuse_managed(patch.config or {})
        expected = _expected_version(if_match)
        raw = patch.model_dump(exclude_unset=True)

        def decide(current: TenantRecord) -> TenantChange | None:
            if expected is not None and current.config_version != expected:
                raise ApiProblem(
                    412, f"the tenant is at version {current.config_version}, not {expected}: read it and retry"
                )
            return self._change(current, patch, raw, own=own)

        record = await self.store.change(slug, decide, actor=actor)
        if record is None:
            raise ApiProblem(401, f"unknown tenant {slug!r}") if own else ApiProblem(404, f"no tenant {slug!r}")
        self._changed(slug)
        return self._view(record)

    def _change(
        self, current: TenantRecord, patch: TenantPatch, raw: dict[str, Any], *, own: bool
    ) -> TenantChange | None:
        before = read_stored(current.region, current.config, tenant=current.slug)
        before_doc = before.document()
        after_doc = merge_patch(before_doc, patch.config) if patch.config is not None else before_doc
        name = patch.name if patch.name is not None else current.name
        if own:
            self._check_editable(before_doc, after_doc, renamed=name != current.name)
        after = self._validate(after_doc, before).model_copy(update={"credentials": before.credentials})
        if after == before and name == current.name:
            return None
        return TenantChange(
            name=name,
            region=after.region,
            config=after.stored(),
            audit={
                "before": {"name": current.name, "config": before_doc},
                "after": {"name": name, "config": after.document()},
                "patch": raw,
            },
        )

    def _check_editable(self, before: dict[str, Any], after: Any, *, renamed: bool) -> None:
        """Raises: ApiProblem 403 naming every key the patch changes that a tenant admin may not."""
        refused = self.policy.refused(changed_paths(before, after))
        errors = [_err((*_CONFIG, *p.split(".")), "only the platform operator may change this") for p in refused]
        if renamed:
            errors.insert(0, _err(("body", "name"), "only the platform operator may rename a tenant"))
        if errors:
            allowed = ", ".join(self.policy.tenant_editable) or "nothing"
            raise ApiProblem(403, f"a tenant admin may change only: {allowed}", errors=errors)

    def _validate(self, doc: Any, before: TenantConfig) -> TenantConfig:
        """Raises: ApiProblem 422 naming each field at fault (dotted path and why)."""
        if not isinstance(doc, dict):
            raise ApiProblem(422, "the config must be an object", errors=[_err(_CONFIG, "expected an object")])
        try:
            config = validate_config(doc)
        except ConfigInvalid as err:
            raise _invalid(err.problems) from None
        if self.known_providers is not None:
            changed = {c for c in Channel if config.providers.allowed(c) != before.providers.allowed(c)}
            problems = unknown_providers(config, self.known_providers)
            problems = [p for p in problems if Channel(p.path[1]) in changed]
            if problems:
                raise _invalid(problems)
        return config

    def _view(self, record: TenantRecord) -> TenantView:
        config = read_stored(record.region, record.config, tenant=record.slug)
        return TenantView(
            slug=record.slug,
            name=record.name,
            config=config,
            config_version=record.config_version,
            credentials=sorted(config.credentials),
            editable=list(self.policy.tenant_editable),
            created_at=record.created_at,
            updated_at=record.updated_at,
        )

    def _changed(self, slug: str) -> None:
        if self.on_change is not None:
            self.on_change(slug)


def _parse(model: type[BaseModel], body: Any) -> Any:
    if not isinstance(body, dict):
        raise ApiProblem(422, "the body must be a JSON object", errors=[_err(("body",), "expected an object")])
    try:
        return model.model_validate(body)
    except ValidationError as err:
        raise ApiProblem(422, "the request is not valid", errors=from_pydantic(err.errors(include_url=False))) from None


def _refuse_managed(config: Mapping[str, Any]) -> None:
    managed = sorted(MANAGED_KEYS & set(config))
    if managed:
        errors = [_err((*_CONFIG, k), "set through PUT /admin/credentials/{channel}/{provider}") for k in managed]
        raise ApiProblem(422, f"{', '.join(managed)} cannot be set in the config", errors=errors)


def _invalid(problems: Collection[ConfigProblem]) -> ApiProblem:
    detail = "the tenant config is not valid: " + "; ".join(f"{p.dotted}: {p.msg}" for p in problems)
    return ApiProblem(422, detail, errors=[FieldError((*_CONFIG, *p.path), p.msg, p.type) for p in problems])


def _expected_version(if_match: str | None) -> int | None:
    """``If-Match: "3"`` (or ``W/"3"``, or ``*`` for any version)."""
    if if_match is None or if_match.strip() == "*":
        return None
    tag = if_match.strip().removeprefix("W/").strip('"')
    if not tag.isdigit():
        raise ApiProblem(422, "If-Match must be the tenant's ETag", errors=[_err(("header", "If-Match"), 'e.g. "3"')])
    return int(tag)


def _encode_cursor(slug: str) -> str:
    return base64.urlsafe_b64encode(slug.encode()).decode().rstrip("=")


def _decode_cursor(cursor: str) -> str:
    try:
        slug = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        slug = ""
    if not slug:
        raise ApiProblem(422, "unknown cursor", errors=[_err(("query", "cursor"), "use next_cursor of a page")])
    return slug


def _err(loc: tuple[str | int, ...], msg: str) -> FieldError:
    return FieldError(loc, msg)
