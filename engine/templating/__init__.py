"""Versioned, localized templates: resolution, variable validation, sandboxed rendering and preview.

Typical use (the sender's hot path)::

    catalog = TemplateCatalog(templates_root)
    resolved = catalog.resolve("otp_login:v3", locale="en-GB", channel=Channel.SMS, tenant="t_001")
    content = catalog.render(resolved, {"code": "384921"}, Channel.SMS, context=RenderContext(...))
"""

from .budget import PREVIEW_LIMITS, RenderLimits
from .catalog import CHANNEL_PARTS, RenderedParts, ResolvedTemplate, TemplateCatalog, content_for
from .context import RenderContext
from .errors import (
    ChannelNotSupported,
    InvalidLocale,
    InvalidManifest,
    InvalidTemplateRef,
    TemplateError,
    UnknownLocale,
    UnknownTemplate,
    UnknownVersion,
)
from .links import (
    LinkTarget,
    UnsubscribeTarget,
    sign_link,
    sign_unsubscribe,
    verify_link,
    verify_unsubscribe,
)
from .locales import locale_chain, normalize_locale
from .manifest import Manifest, VariableSpec
from .preview import Preview, preview
from .refs import TemplateRef
from .sms import SmsInfo, sms_segments
from .sources import FilesystemSource, InMemorySource, TemplateSource, TenantSources
from .text import html_to_text
from .variables import Money, VariableCheck, VariableProblem

__all__ = [
    "CHANNEL_PARTS",
    "PREVIEW_LIMITS",
    "ChannelNotSupported",
    "FilesystemSource",
    "InMemorySource",
    "InvalidLocale",
    "InvalidManifest",
    "InvalidTemplateRef",
    "LinkTarget",
    "Manifest",
    "Money",
    "Preview",
    "RenderContext",
    "RenderLimits",
    "RenderedParts",
    "ResolvedTemplate",
    "SmsInfo",
    "TemplateCatalog",
    "TemplateError",
    "TemplateRef",
    "TemplateSource",
    "TenantSources",
    "UnknownLocale",
    "UnknownTemplate",
    "UnknownVersion",
    "UnsubscribeTarget",
    "VariableCheck",
    "VariableProblem",
    "VariableSpec",
    "content_for",
    "html_to_text",
    "locale_chain",
    "normalize_locale",
    "preview",
    "sign_link",
    "sign_unsubscribe",
    "sms_segments",
    "verify_link",
    "verify_unsubscribe",
]
