"""A template version's manifest: category, channels, default locale and declared variables."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from engine.channels import Channel

VARIABLE_TYPES = ("str", "int", "float", "bool", "url", "date", "datetime", "money", "list", "dict")


@dataclass(frozen=True, slots=True)
class VariableSpec:
    name: str
    type: str = "str"
    required: bool = False
    default: Any = None
    example: Any = None
    sensitive: bool = False


@dataclass(frozen=True, slots=True)
class Manifest:
    template_id: str
    version: int
    category: str
    channels: tuple[Channel, ...]
    default_locale: str
    variables: tuple[VariableSpec, ...]
    description: str = ""

    @classmethod
    def from_dict(cls, template_id: str, version: int, doc: dict[str, Any]) -> Manifest:
        variables = []
        for item in doc.get("variables") or []:
            spec = VariableSpec(
                name=str(item["name"]),
                type=str(item.get("type", "str")),
                required=bool(item.get("required", False)),
                default=item.get("default"),
                example=item.get("example"),
                sensitive=bool(item.get("sensitive", False)),
            )
            if spec.type not in VARIABLE_TYPES:
                raise ValueError(f"variable {spec.name!r}: unknown type {spec.type!r}")
            variables.append(spec)
        return cls(
            template_id=template_id,
            version=version,
            category=str(doc.get("category", "transactional")),
            channels=tuple(Channel(c) for c in doc.get("channels") or ()),
            default_locale=str(doc.get("default_locale", "en")),
            variables=tuple(variables),
            description=str(doc.get("description", "")),
        )

    def examples(self) -> dict[str, Any]:
        return {v.name: v.example if v.example is not None else v.default for v in self.variables}

    @property
    def sensitive(self) -> frozenset[str]:
        return frozenset(v.name for v in self.variables if v.sensitive)
