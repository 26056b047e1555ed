"""Preview: render a template the way a message would, and say everything an author should know.

``POST /api/preview`` calls :func:`preview` and serializes the :class:`Preview`. Missing required
variables do not stop a preview: the manifest's example value stands in and the name is reported in
``variables_missing``. Resolution problems raise :class:`~engine.templating.errors.TemplateError` (422
naming the field) and template faults raise :class:`~engine.errors.RenderError`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from engine.channels import Channel
from engine.delivery import Content

from .budget import PREVIEW_LIMITS, RenderLimits
from .catalog import PROVIDED_NAMES, ResolvedTemplate, TemplateCatalog, content_for
from .context import RenderContext
from .links import UNSUBSCRIBE_PATH
from .sms import SmsInfo, sms_segments
from .variables import VariableProblem

_URL = re.compile(r"https?://[^\s\"'<>)]+", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class Preview:
    """Everything a preview shows: each rendered part, the assembled content and the findings."""

    template_id: str
    version: int
    locale_used: str
    channel: Channel
    parts: Mapping[str, str]  #: part file -> rendered text; ``body.txt`` is included when derived
    content: Content
    text_derived: bool  #: the email text part was derived from the HTML (no body.txt)
    variables_used: tuple[str, ...]  #: declared variables the template references
    variables_missing: tuple[str, ...]  #: required variables the request lacks (examples stood in)
    problems: tuple[VariableProblem, ...]
    warnings: tuple[str, ...]
    sms: SmsInfo | None  #: encoding and segments of the SMS text (SMS channel only)


def preview(
    catalog: TemplateCatalog,
    ref: str,
    *,
    locale: str,
    channel: Channel,
    variables: Mapping[str, Any],
    tenant: str | None = None,
    tenant_default_locale: str | None = None,
    context: RenderContext | None = None,
    limits: RenderLimits = PREVIEW_LIMITS,
) -> Preview:
    """Resolve and render ``ref`` for ``channel`` with ``variables``.

    Raises:
        TemplateError: the reference, locale or channel cannot be resolved (``.field`` names which).
        RenderError: the template fails to render (syntax, undefined name, sandbox, limits).
    """
    resolved = catalog.resolve(
        ref, locale=locale, channel=channel, tenant=tenant, tenant_default_locale=tenant_default_locale
    )
    channel = Channel(channel)
    check = catalog.check_variables(resolved, variables)
    missing = tuple(p.name for p in check.errors if variables.get(p.name) is None)
    # Missing or ill-typed values are reported; their manifest examples stand in so the author sees a render.
    examples = resolved.manifest.examples()
    stand_in = {p.name: examples[p.name] for p in check.errors if p.name in examples}
    values = dict(catalog.check_variables(resolved, {**variables, **stand_in}).values)
    ctx = context or RenderContext(tenant=tenant, message_id="msg_preview")
    extra = _preview_unsubscribe(ctx)
    rendered = catalog.render_parts(resolved, channel, values, context=ctx, limits=limits, extra=extra)
    content = content_for(channel, rendered.texts)
    parts = dict(rendered.texts)
    derived = channel is Channel.EMAIL and "body.txt" not in parts and content.text is not None
    if derived and content.text is not None:
        parts["body.txt"] = content.text
    names = catalog.referenced_names(resolved, channel)
    warnings = [
        *(p.message for p in check.warnings),
        *_unused(variables, names, resolved),
        *_undeclared(names, resolved),
        *rendered.state.notes,
        *_untracked(parts, set(rendered.state.made.values()), values, resolved, ctx),
        *_unsubscribe_missing(resolved, channel, names),
    ]
    return Preview(
        template_id=resolved.id,
        version=resolved.version,
        locale_used=resolved.locale_used,
        channel=channel,
        parts=parts,
        content=content,
        text_derived=derived,
        variables_used=tuple(sorted(names & {v.name for v in resolved.manifest.variables})),
        variables_missing=missing,
        problems=check.problems,
        warnings=tuple(dict.fromkeys(warnings)),
        sms=sms_segments(content.text or "") if channel is Channel.SMS else None,
    )


def _preview_unsubscribe(ctx: RenderContext) -> dict[str, str]:
    # A preview has no recipient: show a sample link so marketing templates render.
    if ctx.link_secret and ctx.tenant and ctx.recipient:
        return {}
    return {"unsubscribe_url": f"{ctx.base_url.rstrip('/')}{UNSUBSCRIBE_PATH}preview"}


def _unused(variables: Mapping[str, Any], names: frozenset[str], resolved: ResolvedTemplate) -> list[str]:
    declared = {v.name for v in resolved.manifest.variables}
    return [
        f"variable {n!r} is declared but this channel's parts do not use it"
        for n in sorted(set(variables) & declared - names)
    ]


def _undeclared(names: frozenset[str], resolved: ResolvedTemplate) -> list[str]:
    declared = {v.name for v in resolved.manifest.variables}
    return [
        f"the template uses {n!r}, which its manifest does not declare: renders will fail"
        for n in sorted(names - declared - PROVIDED_NAMES)
    ]


def _untracked(
    parts: Mapping[str, str],
    made: set[str],
    values: Mapping[str, Any],
    resolved: ResolvedTemplate,
    ctx: RenderContext,
) -> list[str]:
    # Sensitive URLs (magic sign-in links) are deliberately left untracked: no warning for them.
    exempt = {str(values[n]) for n in resolved.manifest.sensitive if n in values}
    base = ctx.base_url.rstrip("/")
    found = []
    for text in parts.values():
        for url in _URL.findall(text.replace("&amp;", "&")):
            if url not in made and url not in exempt and not url.startswith(base):
                found.append(f"link {url} is not made with link(): clicks on it are not tracked")
    return found


def _unsubscribe_missing(resolved: ResolvedTemplate, channel: Channel, names: frozenset[str]) -> list[str]:
    if resolved.manifest.category == "marketing" and channel is Channel.EMAIL and "unsubscribe_url" not in names:
        return ["a marketing email should offer unsubscribe_url"]
    return []
