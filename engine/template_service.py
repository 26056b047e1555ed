"""The template endpoints' rules: tenant template lifecycle and preview, answering with ApiProblem."""

from __future__ import annotations

from typing import Any

from jinja2 import BaseLoader, TemplateSyntaxError
from jinja2.exceptions import SecurityError
from pydantic import BaseModel, ConfigDict, Field, StrictInt, ValidationError

from engine.errors import RenderError
from engine.intake import DEFAULT_LOCALE, check_tenant_id
from engine.models import FieldError, NotificationRequest, Recipient, Tenant
from engine.problems import ApiProblem, from_pydantic
from engine.templating import TemplateCatalog, TemplateError, TemplateRef
from engine.templating.context import RenderContext
from engine.templating.errors import InvalidManifest
from engine.templating.locales import normalize_locale
from engine.templating.preview import preview
from engine.templating.refs import MAX_VERSION
from engine.templating.sandbox import make_environment
from engine.templating.sources import is_partial_name
from engine.tenant_templates import (
    TemplateConflict,
    TenantTemplateCache,
    TenantTemplateStore,
    load_partials,
    validate_document,
)


class DraftRequest(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "manifest": {
                        "category": "transactional",
                        "channels": ["email"],
                        "variables": [{"name": "name", "type": "str", "required": True, "example": "Ada"}],
                    },
                    "texts": {"en": {"subject.txt": "Welcome {{ name }}", "body.html": "<p>Hello {{ name }}!</p>"}},
                }
            ]
        },
    )

    manifest: dict[str, Any]
    texts: dict[str, dict[str, str]] = Field(min_length=1)


class RollbackRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"version": 1}]})

    version: StrictInt = Field(ge=1, le=MAX_VERSION)


class PartialRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"text": "<h1>ACME</h1>"}]})

    text: str = Field(max_length=64_000)


class PreviewRequest(NotificationRequest):
    """The body of ``POST /api/notifications``, so a caller previews exactly the notification it would
    send; ``to`` may be left out, and delivery fields (``to``, ``priority``, ``schedule_at``...) are
    accepted and do not change the render."""

    to: Recipient | None = None  # type: ignore[assignment]


def parse(model: type[BaseModel], body: Any) -> Any:
    if isinstance(body, model):
        return body
    try:
        return model.model_validate(body)
    except ValidationError as err:
        raise ApiProblem(422, "the request is not valid", errors=from_pydantic(err.errors(include_url=False))) from None


def template_id_of(raw: str) -> str:
    try:
        ref = TemplateRef.parse(raw)
    except ValueError as err:
        raise ApiProblem(422, str(err), errors=[FieldError(("path", "template_id"), str(err))]) from None
    if ref.version is not None:
        raise ApiProblem(422, "use the template id without a version here")
    return ref.id


class TemplateService:
    def __init__(
        self,
        store: TenantTemplateStore,
        catalog: TemplateCatalog,
        cache: TenantTemplateCache,
        *,
        secret: str,
        base_url: str,
    ) -> None:
        self.store = store
        self.catalog = catalog
        self.cache = cache
        self.secret = secret
        self.base_url = base_url

    async def save_draft(self, tenant: Tenant, raw_id: str, body: Any, actor: str) -> dict[str, Any]:
        template_id = template_id_of(raw_id)
        draft: DraftRequest = parse(DraftRequest, body)
        partials = await load_partials(self.store.pool, tenant.id)  # what its includes will find when sent
        try:
            validate_document(self.catalog, tenant.slug, template_id, draft.manifest, draft.texts, partials=partials)
        except TemplateError as err:
            raise ApiProblem(422, str(err), errors=[FieldError(("body", _field(err)), str(err))]) from None
        except RenderError as err:
            raise ApiProblem(
                422, f"the template does not render: {err}", errors=[FieldError(("body", "texts"), str(err))]
            ) from None
        saved = await self.store.save_draft(tenant.id, template_id, draft.manifest, draft.texts, actor)
        return saved.as_dict()

    async def draft(self, tenant: Tenant, raw_id: str) -> dict[str, Any]:
        template_id = template_id_of(raw_id)
        found = await self.store.draft(tenant.id, template_id)
        if found is None:
            raise ApiProblem(404, f"{template_id} has no draft")
        return found.as_dict()

    async def publish(self, tenant: Tenant, raw_id: str, actor: str) -> dict[str, Any]:
        try:
            published = await self.store.publish(tenant.id, template_id_of(raw_id), actor)
        except TemplateConflict as err:
            raise ApiProblem(409, str(err)) from None
        return published.as_dict()

    async def rollback(self, tenant: Tenant, raw_id: str, body: Any, actor: str) -> dict[str, Any]:
        request: RollbackRequest = parse(RollbackRequest, body)
        try:
            published = await self.store.rollback(tenant.id, template_id_of(raw_id), request.version, actor)
        except TemplateConflict as err:
            raise ApiProblem(409, str(err)) from None
        return published.as_dict()

    async def versions(self, tenant: Tenant, raw_id: str) -> dict[str, Any]:
        template_id = template_id_of(raw_id)
        rows = await self.store.versions(tenant.id, template_id)
        published = [r for r in rows if r.version is not None]
        if not rows:
            shipped = self.catalog.shipped.versions(template_id)
            if not shipped:
                raise ApiProblem(404, f"no template {template_id!r}")
            return {"template_id": template_id, "owner": "shipped", "latest": shipped[-1], "versions": list(shipped)}
        return {
            "template_id": template_id,
            "owner": "tenant",
            "latest": published[-1].version if published else None,
            "versions": [r.as_dict() for r in published],
            "draft": next((r.as_dict() for r in rows if r.version is None), None),
        }

    async def version(self, tenant: Tenant, raw_id: str, version: int) -> dict[str, Any]:
        template_id = template_id_of(raw_id)
        found = await self.store.version(tenant.id, template_id, version) if 1 <= version <= MAX_VERSION else None
        if found is None:
            raise ApiProblem(404, f"no version {version} of {raw_id!r}")
        return found.as_dict()

    async def save_partial(self, tenant: Tenant, locale: str, name: str, body: Any, actor: str) -> dict[str, Any]:
        request: PartialRequest = parse(PartialRequest, body)
        errors = []
        if not is_partial_name(name):
            errors.append(FieldError(("path", "name"), "a file name such as header.html (letters, digits, - and _)"))
        try:
            locale = normalize_locale(locale)
        except TemplateError as err:
            errors.append(FieldError(("path", "locale"), str(err)))
        try:
            # compiled as templates are: the sandbox's compile-time refusals apply to what they include
            make_environment(BaseLoader(), locale="en", html=name.endswith(".html")).compile(request.text)
        except TemplateSyntaxError as err:
            errors.append(FieldError(("body", "text"), f"line {err.lineno}: {err.message}"))
        except SecurityError as err:
            errors.append(FieldError(("body", "text"), f"refused by the template sandbox: {err}"))
        if errors:
            raise ApiProblem(422, "the partial is not valid", errors=errors)
        await self.store.save_partial(tenant.id, locale, name, request.text, actor)
        return {"locale": locale, "name": name, "text": request.text}

    async def partials(self, tenant: Tenant) -> dict[str, Any]:
        return {"partials": await self.store.partials(tenant.id)}

    async def preview(self, tenant: Tenant, body: Any) -> dict[str, Any]:
        request: PreviewRequest = parse(PreviewRequest, body)
        check_tenant_id(request.tenant_id, tenant.slug)
        await self.cache.ensure(tenant.slug, tenant.id, tenant.templates_version)
        context = RenderContext(
            tenant=tenant.slug, message_id="msg_preview", base_url=self.base_url, link_secret=self.secret
        )
        try:
            shown = preview(
                self.catalog,
                request.template_id,
                locale=request.locale or tenant.default_locale or DEFAULT_LOCALE,
                channel=request.channel,
                variables=request.variables,
                tenant=tenant.slug,
                tenant_default_locale=tenant.default_locale,
                context=context,
            )
        except TemplateError as err:
            raise ApiProblem(422, str(err), errors=[FieldError(("body", _field(err)), str(err))]) from None
        except RenderError as err:
            raise ApiProblem(
                422, f"the template does not render: {err}", errors=[FieldError(("body", "variables"), str(err))]
            ) from None
        return {
            "template_id": shown.template_id,
            "version": shown.version,
            "locale_used": shown.locale_used,
            "channel": shown.channel.value,
            "parts": dict(shown.parts),
            "text_derived": shown.text_derived,
            "variables_used": list(shown.variables_used),
            "variables_missing": list(shown.variables_missing),
            "problems": [{"name": p.name, "message": p.message, "warning": p.warning} for p in shown.problems],
            "warnings": list(shown.warnings),
            "sms": (
                {"encoding": shown.sms.encoding, "characters": shown.sms.characters, "segments": shown.sms.segments}
                if shown.sms
                else None
            ),
        }


def _field(err: TemplateError) -> str:
    if isinstance(err, InvalidManifest) and err.field == "template_id":
        return "manifest"
    return err.field
