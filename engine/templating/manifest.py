"""A template version's manifest (locale-independent) and checking request variables against it.

``templates/_manifests/<template_id>/v<N>.yaml``::

    description: One-time login code
    category: auth                   # auth | transactional | marketing
    channels: [email, sms, whatsapp]
    default_locale: en
    variables:
      - {name: code, type: str, required: true, sensitive: true, example: "384921"}
      - {name: ttl, type: int, default: 5, example: 5}
    whatsapp: {template: otp_login, parameters: [code], buttons: [{sub_type: url, parameter: code}]}

(the ``whatsapp`` block: :mod:`engine.templating.whatsapp`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from engine.channels import Channel

from .errors import InvalidLocale, InvalidManifest
from .locales import normalize_locale
from .variables import CONVERTERS, VariableCheck, VariableProblem, VariableTypeError, convert
from .whatsapp import WhatsappSpec, parse_whatsapp

#: ``auth`` (one-time codes, sign-in) and ``transactional`` are required: never opted out of.
CATEGORIES = ("auth", "transactional", "marketing")
#: Names the renderer provides itself; a manifest may not declare them.
RESERVED_NAMES = frozenset({"unsubscribe_url", "message_id", "range", "dict", "tracked_link"})
_NAME = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
_MANIFEST_KEYS = frozenset({"description", "category", "channels", "default_locale", "variables", "whatsapp"})
_VARIABLE_KEYS = frozenset({"name", "type", "required", "default", "example", "sensitive", "description"})


@dataclass(frozen=True, slots=True)
class VariableSpec:
    """One declared variable. ``default`` applies when the request leaves it out."""

    name: str
    type: str = "str"
    required: bool = False
    default: Any = None
    example: Any = None
    sensitive: bool = False
    description: str = ""


@dataclass(frozen=True, slots=True)
class Manifest:
    """What one version of a template is: its category, channels, default locale and variables."""

    template_id: str
    version: int
    category: str
    channels: tuple[Channel, ...]
    default_locale: str
    variables: tuple[VariableSpec, ...]
    description: str = ""
    #: A pre-approved WhatsApp template this version sends as (outside the 24 h window only templates
    #: are delivered): name, language, body parameters and buttons, Twilio's content sid, Meta's category.
    whatsapp: WhatsappSpec | None = None

    @classmethod
    def from_dict(cls, template_id: str, version: int, doc: Any) -> Manifest:
        """Build and validate a manifest document.

        Raises:
            InvalidManifest: the message names the manifest and the offending key.
        """
        where = f"manifest {template_id}:v{version}"
        if not isinstance(doc, Mapping):
            raise InvalidManifest(f"{where}: expected a mapping")
        _no_unknown_keys(where, doc, _MANIFEST_KEYS)
        variables = tuple(_variable(where, item) for item in _list(where, doc.get("variables"), "variables"))
        names = [v.name for v in variables]
        if len(set(names)) != len(names):
            raise InvalidManifest(f"{where}: a variable is declared twice")
        category = _category(where, doc.get("category", "transactional"))
        return cls(
            template_id=template_id,
            version=version,
            category=category,
            channels=_channels(where, doc.get("channels")),
            default_locale=_locale(where, doc.get("default_locale", "en")),
            variables=variables,
            description=str(doc.get("description", "")),
            whatsapp=parse_whatsapp(where, doc.get("whatsapp"), set(names), category),
        )

    def variable(self, name: str) -> VariableSpec | None:
        return next((v for v in self.variables if v.name == name), None)

    def examples(self) -> dict[str, Any]:
        """Example values of every variable that has one (else its default): preview and tests use them."""
        chosen = {v.name: v.example if v.example is not None else v.default for v in self.variables}
        return {name: value for name, value in chosen.items() if value is not None}

    @property
    def sensitive(self) -> frozenset[str]:
        return frozenset(v.name for v in self.variables if v.sensitive)

    def check(self, variables: Mapping[str, Any]) -> VariableCheck:
        """Convert the request's values, apply defaults and list the problems (see ``variables``)."""
        values: dict[str, Any] = {}
        problems: list[VariableProblem] = []
        for spec in self.variables:
            given = variables.get(spec.name)
            if given is None:
                if spec.default is not None:
                    values[spec.name] = convert(spec.type, spec.default)
                elif spec.required:
                    problems.append(VariableProblem(spec.name, f"{spec.name} is required ({spec.type})"))
                continue
            try:
                values[spec.name] = convert(spec.type, given)
            except VariableTypeError as err:
                problems.append(VariableProblem(spec.name, f"{spec.name} {err}"))
        for name in sorted(set(variables) - {v.name for v in self.variables}):
            message = f"{name} is not a variable of {self.template_id}:v{self.version}; it is ignored"
            problems.append(VariableProblem(name, message, warning=True))
        return VariableCheck(values, tuple(problems))


def _variable(where: str, item: Any) -> VariableSpec:
    if not isinstance(item, Mapping):
        raise InvalidManifest(f"{where}: each variable must be a mapping")
    name = item.get("name")
    if not isinstance(name, str) or not _NAME.match(name) or name in RESERVED_NAMES:
        raise InvalidManifest(f"{where}: variable name {name!r} is not allowed (a-z, 0-9, _; not reserved)")
    _no_unknown_keys(f"{where}: variable {name}", item, _VARIABLE_KEYS)
    kind = item.get("type", "str")
    if kind not in CONVERTERS:
        raise InvalidManifest(f"{where}: variable {name}: unknown type {kind!r} (one of {', '.join(CONVERTERS)})")
    spec = VariableSpec(
        name=name,
        type=kind,
        required=_flag(where, item, "required"),
        default=item.get("default"),
        example=item.get("example"),
        sensitive=_flag(where, item, "sensitive"),
        description=str(item.get("description", "")),
    )
    if spec.required and spec.default is not None:
        raise InvalidManifest(f"{where}: variable {name} is required and has a default; choose one")
    for label, value in (("default", spec.default), ("example", spec.example)):
        if value is not None:
            try:
                convert(kind, value)
            except VariableTypeError as err:
                raise InvalidManifest(f"{where}: variable {name}: {label} {err}") from None
    return spec


def _no_unknown_keys(where: str, doc: Mapping[str, Any], allowed: frozenset[str]) -> None:
    unknown = sorted(set(doc) - allowed)
    if unknown:
        raise InvalidManifest(f"{where}: unknown key(s) {', '.join(map(str, unknown))}")


def _list(where: str, value: Any, key: str) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise InvalidManifest(f"{where}: {key} must be a list")
    return value


def _flag(where: str, item: Mapping[str, Any], key: str) -> bool:
    value = item.get(key, False)
    if not isinstance(value, bool):
        raise InvalidManifest(f"{where}: variable {item.get('name')}: {key} must be true or false")
    return value


def _category(where: str, value: Any) -> str:
    if value not in CATEGORIES:
        raise InvalidManifest(f"{where}: category must be one of {', '.join(CATEGORIES)}")
    return str(value)


def _channels(where: str, value: Any) -> tuple[Channel, ...]:
    items = _list(where, value, "channels")
    if not items:
        raise InvalidManifest(f"{where}: channels must list at least one channel")
    try:
        return tuple(Channel(c) for c in items)
    except ValueError:
        known = ", ".join(c.value for c in Channel)
        raise InvalidManifest(f"{where}: channels must be among {known}") from None


def _locale(where: str, value: Any) -> str:
    try:
        return normalize_locale(value)
    except InvalidLocale:
        raise InvalidManifest(f"{where}: default_locale {value!r} is not a locale tag") from None
