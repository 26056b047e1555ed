"""The template catalog: which version and locale a message uses, its variables, and rendering it.

Resolution: a tenant that has any version of an id resolves that id among its own versions only;
otherwise the shipped templates serve it. No version means the newest published one. The locale is
the first of exact -> language -> tenant default -> manifest default that has the channel's parts.

Compiled templates are cached per (owner, id, version, locale, part), ``owner`` being the tenant whose
template it is (None for shipped ones, which all tenants share). Published versions never change, so
once warm a render reads nothing from disk.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from jinja2 import Template, meta, nodes

from engine.channels import Channel
from engine.delivery import Content
from engine.errors import RenderError

from .budget import Budget, RenderLimits, RenderState, rendering
from .context import RenderContext
from .errors import ChannelNotSupported, UnknownLocale, UnknownTemplate, UnknownVersion
from .failures import RENDER_FAILURES, render_failure, stream
from .links import open_url, sign_open, sign_unsubscribe, unsubscribe_url
from .loader import PartialLoader
from .locales import locale_chain
from .manifest import Manifest
from .pixel import insert_pixel
from .refs import TemplateRef
from .sandbox import HeraldSandbox, make_environment
from .sources import FilesystemSource, TemplateSource, TenantSources
from .text import html_to_text
from .variables import VariableCheck, VariableProblem

#: Parts each channel needs: (all of, at least one of).
REQUIRED_PARTS: dict[Channel, tuple[tuple[str, ...], tuple[str, ...]]] = {
    Channel.EMAIL: (("subject.txt",), ("body.html", "body.txt")),
    Channel.SMS: ((), ("sms.txt",)),
    Channel.WHATSAPP: ((), ("sms.txt",)),
    Channel.PUSH: ((), ("push_body.txt",)),
    Channel.INAPP: ((), ("inapp.md",)),
}
#: Parts each channel renders when present.
CHANNEL_PARTS: dict[Channel, tuple[str, ...]] = {
    Channel.EMAIL: ("subject.txt", "body.html", "body.txt"),
    Channel.SMS: ("sms.txt",),
    Channel.WHATSAPP: ("sms.txt",),
    Channel.PUSH: ("push_title.txt", "push_body.txt"),
    Channel.INAPP: ("inapp.md",),
}
#: Names the renderer provides besides the declared variables.
PROVIDED_NAMES = frozenset({"link", "tracked_link", "range", "dict", "unsubscribe_url", "message_id"})
_MISSING = object()


@dataclass(frozen=True, slots=True)
class ResolvedTemplate:
    """What a message renders with, pinned at admission. ``owner`` is the tenant whose template this is
    (None: shipped)."""

    id: str
    version: int
    locale_used: str
    manifest: Manifest
    owner: str | None = None

    @property
    def ref(self) -> str:
        return f"{self.id}:v{self.version}"


@dataclass(frozen=True, slots=True)
class CompiledPart:
    """One compiled part and the names it (and its partials) reference."""

    template: Template
    names: frozenset[str]


@dataclass(frozen=True, slots=True)
class RenderedParts:
    """Rendered part texts (``{"subject.txt": ..., "body.html": ...}``) and what the render collected."""

    texts: Mapping[str, str]
    state: RenderState


class TemplateCatalog:
    """Resolves, validates and renders templates from the shipped source and tenants' sources.

    ``root`` is the shipped templates directory (or any :class:`TemplateSource`); ``tenants`` maps a
    tenant slug to its own source. ``limits`` bound every render unless a call passes others.
    """

    def __init__(
        self,
        root: Path | str | TemplateSource,
        *,
        tenants: TenantSources | None = None,
        limits: RenderLimits | None = None,
        max_cached: int = 20_000,
    ) -> None:
        self.shipped: TemplateSource = FilesystemSource(Path(root)) if isinstance(root, Path | str) else root
        self.tenants = tenants
        self.limits = limits or RenderLimits()
        self._max_cached = max_cached
        self._compiled: dict[tuple[str | None, str, int, str, str], CompiledPart | None] = {}
        self._envs: dict[tuple[str | None, str, str, bool], HeraldSandbox] = {}
        self._lock = threading.RLock()

    # -- resolution ----------------------------------------------------------------------------------

    def resolve(
        self,
        ref: str,
        *,
        locale: str,
        channel: Channel,
        tenant: str | None = None,
        tenant_default_locale: str | None = None,
    ) -> ResolvedTemplate:
        """Pin the version and locale a message will render with.

        Raises:
            InvalidTemplateRef, UnknownTemplate, UnknownVersion, InvalidManifest: field ``template_id``.
            ChannelNotSupported: field ``channel``.
            InvalidLocale, UnknownLocale: field ``locale``.
        """
        parsed = TemplateRef.parse(ref)
        owner, source = self._owner_of(parsed.id, tenant)
        versions = source.versions(parsed.id)
        if not versions:
            raise UnknownTemplate(f"there is no template {parsed.id!r}")
        version = parsed.version or versions[-1]
        if version not in versions:
            have = ", ".join(f"v{v}" for v in versions)
            raise UnknownVersion(f"template {parsed.id!r} has no version v{version} (it has {have})")
        manifest = source.manifest(parsed.id, version)
        channel = _channel(channel, manifest)
        for candidate in locale_chain(locale, tenant_default_locale, manifest.default_locale):
            if _serves(source.parts(candidate, parsed.id, version), channel):
                return ResolvedTemplate(parsed.id, version, candidate, manifest, owner)
        raise UnknownLocale(f"{parsed.id}:v{version} has no {channel.value} content in {locale!r} nor its fallbacks")

    def _owner_of(self, template_id: str, tenant: str | None) -> tuple[str | None, TemplateSource]:
        if tenant and self.tenants is not None:
            own = self.tenants.get(tenant)
            if own is not None and own.versions(template_id):
                return tenant, own
        return None, self.shipped

    def _source(self, owner: str | None) -> TemplateSource:
        if owner is None:
            return self.shipped
        own = self.tenants.get(owner) if self.tenants is not None else None
        if own is None:
            raise UnknownTemplate(f"tenant {owner!r} has no templates any more")
        return own

    # -- variables -----------------------------------------------------------------------------------

    def check_variables(self, resolved: ResolvedTemplate, variables: Mapping[str, Any]) -> VariableCheck:
        """Converted values with defaults applied, and every problem (errors and warnings)."""
        return resolved.manifest.check(variables)

    def validate_variables(
        self, resolved: ResolvedTemplate, variables: Mapping[str, Any], *, include_warnings: bool = False
    ) -> list[VariableProblem]:
        """Errors in the request's variables (missing required, wrong type): each one blocks a send.

        Unknown names are warnings, not errors: they are left out unless ``include_warnings`` is set,
        so a caller that answers 422 for every problem returned does the right thing.
        """
        problems = resolved.manifest.check(variables).problems
        return [p for p in problems if include_warnings or p.is_error]

    # -- rendering -----------------------------------------------------------------------------------

    def render(
        self,
        resolved: ResolvedTemplate,
        variables: Mapping[str, Any],
        channel: Channel,
        *,
        context: RenderContext | None = None,
        limits: RenderLimits | None = None,
    ) -> Content:
        """Render every part the channel uses; nothing half-rendered is ever returned.

        Raises:
            ChannelNotSupported: the version does not serve ``channel``.
            RenderError: invalid variables, an undefined name, a sandbox violation, a limit reached.
        """
        channel = _channel(channel, resolved.manifest)
        check = resolved.manifest.check(variables)
        if check.errors:
            raise RenderError("; ".join(p.message for p in check.errors), code="invalid_variables")
        rendered = self.render_parts(resolved, channel, check.values, context=context, limits=limits)
        content = content_for(channel, rendered.texts)
        if channel is Channel.EMAIL and content.html and context is not None:
            content = _with_open_pixel(content, context)
        return content

    def render_parts(
        self,
        resolved: ResolvedTemplate,
        channel: Channel,
        values: Mapping[str, Any],
        *,
        context: RenderContext | None = None,
        limits: RenderLimits | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> RenderedParts:
        """Render the channel's parts with already-checked ``values`` (see :meth:`check_variables`).

        Raises:
            RenderError: as :meth:`render`.
        """
        limits = limits or self.limits
        ctx = context or RenderContext(tenant=resolved.owner)
        compiled = self.compile(resolved, channel)
        uses = frozenset().union(*(c.names for c in compiled.values()))
        scope = {**_provided(ctx, uses), **(extra or {}), **values}
        secrets = [str(values[n]) for n in resolved.manifest.sensitive if n in values]
        state = RenderState(Budget(limits), ctx)
        texts: dict[str, str] = {}
        with rendering(state):
            for part, item in compiled.items():
                where = f"{resolved.ref}/{resolved.locale_used}/{part}"
                try:
                    texts[part] = stream(item.template, scope, limits.max_output_chars, state.budget).strip()
                except RENDER_FAILURES as err:
                    raise render_failure(err, where, secrets) from None
        return RenderedParts(texts, state)

    def compile(self, resolved: ResolvedTemplate, channel: Channel) -> dict[str, CompiledPart]:
        """Compile (or fetch from cache) the channel's parts: publish checks and warm-up call this.

        Raises:
            RenderError: a syntax error or a refused construct, naming the part and line.
        """
        found = {}
        for part in CHANNEL_PARTS[channel]:
            item = self._compiled_part(resolved, part)
            if item is not None:
                found[part] = item
        return found

    def referenced_names(self, resolved: ResolvedTemplate, channel: Channel) -> frozenset[str]:
        """Names the channel's parts and their partials use (declared variables and provided ones)."""
        return frozenset().union(*(c.names for c in self.compile(resolved, channel).values()))

    def invalidate(self, owner: str | None) -> None:
        """Forget compiled templates and partials of one owner (after a tenant publishes partials)."""
        with self._lock:
            for key in [k for k in self._compiled if k[0] == owner]:
                del self._compiled[key]
            for env_key in [k for k in self._envs if k[0] == owner]:
                del self._envs[env_key]

    def _compiled_part(self, resolved: ResolvedTemplate, part: str) -> CompiledPart | None:
        key = (resolved.owner, resolved.id, resolved.version, resolved.locale_used, part)
        hit = self._compiled.get(key, _MISSING)
        if hit is not _MISSING:
            return hit  # type: ignore[return-value]
        with self._lock:
            item = self._compile_part(resolved, part)
            if len(self._compiled) >= self._max_cached:
                del self._compiled[next(iter(self._compiled))]  # oldest first; published text is immutable
            self._compiled[key] = item
            return item

    def _compile_part(self, resolved: ResolvedTemplate, part: str) -> CompiledPart | None:
        source = self._source(resolved.owner)
        if part not in source.parts(resolved.locale_used, resolved.id, resolved.version):
            return None
        text = source.read(resolved.locale_used, resolved.id, resolved.version, part)
        env = self._env(resolved, html=part.endswith(".html"))
        where = f"{resolved.ref}/{resolved.locale_used}/{part}"
        try:
            tree = env.parse(text, name=where)
            names = _names(env, tree, set())
            return CompiledPart(env.from_string(tree), frozenset(names))
        except RENDER_FAILURES as err:
            raise render_failure(err, where, []) from None

    def _env(self, resolved: ResolvedTemplate, *, html: bool) -> HeraldSandbox:
        key = (resolved.owner, resolved.locale_used, resolved.manifest.default_locale, html)
        env = self._envs.get(key)
        if env is None:
            chain = locale_chain(resolved.locale_used, None, resolved.manifest.default_locale)
            owners = [self._source(resolved.owner)] + ([self.shipped] if resolved.owner else [])
            loader = PartialLoader([(src, loc) for src in owners for loc in chain])
            env = self._envs[key] = make_environment(loader, locale=resolved.locale_used, html=html)
        return env


def _names(env: HeraldSandbox, tree: nodes.Template, seen: set[str]) -> set[str]:
    """Undeclared names of a template and, recursively, of the partials it includes by literal name."""
    names = set(meta.find_undeclared_variables(tree))
    # meta leaves out names that are also globals; a variable called "link" shadows the helper.
    names |= {n.name for n in tree.find_all(nodes.Name) if n.ctx == "load" and n.name in env.globals}
    for name in meta.find_referenced_templates(tree):
        if name is None or name in seen or env.loader is None:
            continue
        seen.add(name)
        try:
            text, _, _ = env.loader.get_source(env, name)
        except LookupError:
            continue  # a missing partial fails the render itself, with its name
        names |= _names(env, env.parse(text, name=name), seen)
    return names


def _channel(channel: Channel | str, manifest: Manifest) -> Channel:
    try:
        chosen = Channel(channel)
    except ValueError:
        raise ChannelNotSupported(f"{channel!r} is not a channel") from None
    if chosen not in manifest.channels:
        served = ", ".join(c.value for c in manifest.channels)
        raise ChannelNotSupported(
            f"{manifest.template_id}:v{manifest.version} does not serve {chosen.value} (it serves {served})"
        )
    return chosen


def _serves(parts: frozenset[str], channel: Channel) -> bool:
    all_of, one_of = REQUIRED_PARTS[channel]
    return all(p in parts for p in all_of) and any(p in parts for p in one_of)


def _provided(ctx: RenderContext, uses: frozenset[str]) -> dict[str, Any]:
    scope: dict[str, Any] = {}
    if ctx.message_id:
        scope["message_id"] = ctx.message_id
    # Signing costs an HMAC: only for templates that show the link.
    if "unsubscribe_url" in uses and ctx.link_secret and ctx.tenant and ctx.recipient:
        token = sign_unsubscribe(
            ctx.link_secret, ctx.tenant, ctx.recipient, category=ctx.category, generation=ctx.unsubscribe_generation
        )
        scope["unsubscribe_url"] = unsubscribe_url(ctx.base_url, token)
    return scope


def _with_open_pixel(content: Content, ctx: RenderContext) -> Content:
    """Tracked HTML email gets its open pixel (a signed token naming the message, nothing stored)."""
    if not (ctx.tracking and ctx.link_secret and ctx.tenant and ctx.message_id and content.html):
        return content
    url = open_url(ctx.base_url, sign_open(ctx.link_secret, ctx.tenant, ctx.message_id))
    return replace(content, html=insert_pixel(content.html, url))


def _one_line(text: str | None) -> str | None:
    # A subject or push title is one line: a newline from a variable must not reach a mail header.
    return " ".join(text.split()) if text is not None else None


def content_for(channel: Channel, texts: Mapping[str, str]) -> Content:
    """Assemble the driver's :class:`Content` from rendered parts (email text derived when absent)."""
    if channel is Channel.EMAIL:
        html = texts.get("body.html")
        text = texts.get("body.txt")
        if text is None and html is not None:
            text = html_to_text(html)
        return Content(subject=_one_line(texts.get("subject.txt")), html=html, text=text)
    if channel is Channel.PUSH:
        return Content(title=_one_line(texts.get("push_title.txt")), text=texts.get("push_body.txt"))
    if channel is Channel.INAPP:
        return Content(text=texts.get("inapp.md"))
    return Content(text=texts.get("sms.txt"))
