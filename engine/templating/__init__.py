"""Versioned, localized templates: resolution, variable validation and sandboxed rendering."""

from .catalog import ResolvedTemplate, TemplateCatalog, VariableProblem
from .errors import ChannelNotSupported, TemplateError, UnknownTemplate, UnknownVersion
from .manifest import Manifest, VariableSpec
from .refs import TemplateRef
from .render import RenderContext

__all__ = [
    "ChannelNotSupported",
    "Manifest",
    "RenderContext",
    "ResolvedTemplate",
    "TemplateCatalog",
    "TemplateError",
    "TemplateRef",
    "UnknownTemplate",
    "UnknownVersion",
    "VariableProblem",
    "VariableSpec",
]
