"""The template catalog: which version and locale a message uses, and rendering it.

Shipped layout: ``<root>/<locale>/<template_id>/v<N>/<part>`` with a locale-independent manifest at
``<root>/_manifests/<template_id>/v<N>.yaml`` and partials at ``<root>/<locale>/_partials/``.
Compiled templates are cached per (tenant, id, version, locale, part): once warm, a render does no I/O.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import Any

import yaml
from jinja2 import Template
from jinja2.sandbox import ImmutableSandboxedEnvironment

from drivers.base import Content
from engine.channels import Channel

from .errors import ChannelNotSupported, UnknownLocale, UnknownTemplate, UnknownVersion
from .manifest import Manifest
from .refs import TemplateRef
from .render import RENDER_FAILURES, RenderContext, fail, html_to_text, make_environment

#: The parts each channel needs (first tuple: all required; second: at least one of).
CHANNEL_PARTS: dict[Channel, tuple[tuple[str, ...], tuple[str, ...]]] = {
    Channel.EMAIL: (("subject.txt",), ("body.html", "body.txt")),
    Channel.SMS: ((), ("sms.txt",)),
    Channel.WHATSAPP: ((), ("sms.txt",)),
    Channel.PUSH: ((), ("push_body.txt",)),
    Channel.INAPP: ((), ("inapp.md",)),
}


@dataclass(frozen=True, slots=True)
class ResolvedTemplate:
    id: str
    version: int
    locale_used: str
    manifest: Manifest
    tenant: str | None = None


@dataclass(frozen=True, slots=True)
class VariableProblem:
    name: str
    message: str


def locale_chain(locale: str, *more: str | None) -> list[str]:
    """``en-GB`` -> ``en`` -> each further fallback (and its language), without repeats."""
    chain: list[str] = []
    for candidate in (locale, *more):
        if not candidate:
            continue
        for option in (candidate, candidate.split("-")[0]):
            if option not in chain:
                chain.append(option)
    return chain


class TemplateCatalog:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self._manifests: dict[tuple[str, int], Manifest] = {}
        self._versions: dict[str, tuple[int, ...]] = {}
        self._compiled: dict[tuple[str | None, str, int, str, str], Template | None] = {}
        self._envs: dict[tuple[str, bool], ImmutableSandboxedEnvironment] = {}
        self._lock = threading.Lock()

    # -- resolution --------------------------------------------------------------------------------

    def versions(self, template_id: str) -> tuple[int, ...]:
        cached = self._versions.get(template_id)
        if cached is None:
            folder = self.root / "_manifests" / template_id
            found = (
                sorted(int(p.stem[1:]) for p in folder.glob("v*.yaml") if p.stem[1:].isdigit())
                if folder.is_dir()
                else []
            )
            cached = self._versions[template_id] = tuple(found)
        return cached

    def manifest(self, template_id: str, version: int) -> Manifest:
        key = (template_id, version)
        cached = self._manifests.get(key)
        if cached is None:
            path = self.root / "_manifests" / template_id / f"v{version}.yaml"
            doc = yaml.safe_load(path.read_text()) or {}
            cached = self._manifests[key] = Manifest.from_dict(template_id, version, doc)
        return cached

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
            UnknownTemplate / UnknownVersion (field ``template_id``), ChannelNotSupported (``channel``),
            UnknownLocale (``locale``).
        """
        try:
            parsed = TemplateRef.parse(ref)
        except ValueError as err:
            raise UnknownTemplate(str(err)) from None
        versions = self.versions(parsed.id)
        if not versions:
            raise UnknownTemplate(f"no template {parsed.id!r}")
        version = parsed.version or versions[-1]
        if version not in versions:
            raise UnknownVersion(f"template {parsed.id!r} has no version {version} (has {_vs(versions)})")
        manifest = self.manifest(parsed.id, version)
        if channel not in manifest.channels:
            served = ", ".join(c.value for c in manifest.channels)
            raise ChannelNotSupported(f"{parsed} does not serve {channel.value} (serves {served})")
        for candidate in locale_chain(locale, tenant_default_locale, manifest.default_locale):
            if self._has_parts(candidate, parsed.id, version, channel):
                return ResolvedTemplate(parsed.id, version, candidate, manifest, tenant)
        raise UnknownLocale(f"{parsed} has no {channel.value} content for {locale!r} or its fallbacks")

    def _has_parts(self, locale: str, template_id: str, version: int, channel: Channel) -> bool:
        folder = self.root / locale / template_id / f"v{version}"
        required, one_of = CHANNEL_PARTS[channel]
        return all((folder / p).is_file() for p in required) and any((folder / p).is_file() for p in one_of)

    # -- variables ---------------------------------------------------------------------------------

    def validate_variables(self, resolved: ResolvedTemplate, variables: dict[str, Any]) -> list[VariableProblem]:
        problems = []
        for spec in resolved.manifest.variables:
            if spec.name not in variables or variables[spec.name] is None:
                if spec.required and spec.default is None:
                    problems.append(VariableProblem(spec.name, f"{spec.name} is required ({spec.type})"))
                continue
            message = _type_problem(spec.type, variables[spec.name])
            if message:
                problems.append(VariableProblem(spec.name, f"{spec.name} {message}"))
        return problems

    # -- rendering ---------------------------------------------------------------------------------

    def render(
        self,
        resolved: ResolvedTemplate,
        variables: dict[str, Any],
        channel: Channel,
        *,
        context: RenderContext | None = None,
    ) -> Content:
        """Render every part the channel needs; nothing half-rendered is ever returned.

        Raises:
            RenderError: an undefined name, a sandbox violation or a failing expression.
        """
        values = {**{v.name: v.default for v in resolved.manifest.variables if v.default is not None}, **variables}
        ctx = context or RenderContext(tenant=resolved.tenant)
        values.setdefault("message_id", ctx.message_id)

        def part(name: str) -> str | None:
            template = self._template(resolved, name)
            if template is None:
                return None
            try:
                return template.render(values).strip()
            except RENDER_FAILURES as err:
                raise fail(err, f"{resolved.id}:v{resolved.version}/{resolved.locale_used}/{name}") from None

        if channel is Channel.EMAIL:
            html = part("body.html")
            text = part("body.txt")
            return Content(subject=part("subject.txt"), html=html, text=text or html_to_text(html or ""))
        if channel in (Channel.SMS, Channel.WHATSAPP):
            return Content(text=part("sms.txt"))
        if channel is Channel.PUSH:
            return Content(title=part("push_title.txt"), text=part("push_body.txt"))
        return Content(text=part("inapp.md"))

    def _template(self, resolved: ResolvedTemplate, part: str) -> Template | None:
        key = (resolved.tenant, resolved.id, resolved.version, resolved.locale_used, part)
        if key in self._compiled:
            return self._compiled[key]
        with self._lock:
            path = self.root / resolved.locale_used / resolved.id / f"v{resolved.version}" / part
            compiled = None
            if path.is_file():
                env = self._env(resolved.locale_used, html=part.endswith(".html"))
                try:
                    compiled = env.from_string(path.read_text())
                except RENDER_FAILURES as err:
                    raise fail(err, f"{resolved.id}:v{resolved.version}/{resolved.locale_used}/{part}") from None
            self._compiled[key] = compiled
            return compiled

    def _env(self, locale: str, *, html: bool) -> ImmutableSandboxedEnvironment:
        key = (locale, html)
        env = self._envs.get(key)
        if env is None:
            dirs = [self.root / loc / "_partials" for loc in locale_chain(locale)]
            env = self._envs[key] = make_environment(dirs, html=html)
        return env


def _vs(versions: tuple[int, ...]) -> str:
    return ", ".join(f"v{v}" for v in versions)


def _type_problem(kind: str, value: Any) -> str | None:
    ok = {
        "str": isinstance(value, str),
        "int": isinstance(value, int) and not isinstance(value, bool),
        "float": isinstance(value, int | float) and not isinstance(value, bool),
        "bool": isinstance(value, bool),
        "url": isinstance(value, str) and value.startswith(("https://", "http://")),
        "money": isinstance(value, int | float | str) and not isinstance(value, bool),
        "list": isinstance(value, list),
        "dict": isinstance(value, dict),
        "date": _is_iso(value, date),
        "datetime": _is_iso(value, datetime),
    }.get(kind, True)
    if ok:
        return None
    if kind == "url":
        return "must be an http(s) URL"
    return f"must be of type {kind}, got {type(value).__name__}"


def _is_iso(value: Any, kind: type) -> bool:
    if not isinstance(value, str):
        return False
    try:
        (date.fromisoformat if kind is date else datetime.fromisoformat)(value)
    except ValueError:
        return False
    return True
