"""Validation of a whole config document, with errors that name the dotted path and say why."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from engine.channels import Channel

from .schema import TenantConfig, known_keys, section_at

Path = tuple[str | int, ...]

#: pydantic's wording where it would name our classes.
_PLAIN = {"model_type": "should be an object", "dict_type": "should be an object"}


@dataclass(frozen=True, slots=True)
class ConfigProblem:
    """One thing wrong with a document: where (``("providers", "email", "allow")``) and why."""

    path: Path
    msg: str
    type: str = "value_error"

    @property
    def dotted(self) -> str:
        return ".".join(str(p) for p in self.path) or "(document)"


class ConfigInvalid(ValueError):
    """The document does not fit the schema; ``problems`` says where and why."""

    def __init__(self, problems: list[ConfigProblem]) -> None:
        self.problems = problems
        super().__init__("; ".join(f"{p.dotted}: {p.msg}" for p in problems))


def validate_config(doc: Mapping[str, Any]) -> TenantConfig:
    """Raises: ConfigInvalid naming every field at fault."""
    try:
        return TenantConfig.model_validate(doc)
    except ValidationError as err:
        raise ConfigInvalid(problems_of(err)) from None


def problems_of(err: ValidationError) -> list[ConfigProblem]:
    out = []
    for e in err.errors(include_url=False):
        path: Path = tuple(e["loc"])
        if path and path[-1] == "[key]":  # pydantic's mark of a bad mapping key (a dedupe category)
            out.append(ConfigProblem(path[:-1], "not a valid name here: lower-case letters, digits, _ and -"))
            continue
        if e["type"] == "extra_forbidden":
            section = section_at(path[:-1])
            known = ", ".join(known_keys(section)) if section else ""
            msg = f"unknown key (known here: {known})" if known else "unknown key"
            out.append(ConfigProblem(path, msg, "extra_forbidden"))
        else:
            msg = _PLAIN.get(e["type"]) or str(e["msg"]).removeprefix("Value error, ")
            out.append(ConfigProblem(path, msg, str(e["type"])))
    return out


def unknown_providers(config: TenantConfig, known: Mapping[Channel, Collection[str]]) -> list[ConfigProblem]:
    """Allow-list entries and routing overrides that name no driver registered for the channel (a typo
    would otherwise narrow the channel to nothing, or override nothing)."""
    problems = []
    for channel in Channel:
        names = known.get(channel, ())
        named: list[tuple[Path, str]] = [
            (("providers", channel.value, "allow", i), name)
            for i, name in enumerate(config.providers.allowed(channel) or ())
        ]
        overridden = config.routing.channels.get(channel, {})
        named += [(("routing", "channels", channel.value, name), name) for name in overridden]
        choices = ", ".join(sorted(names)) or "none"
        problems += [
            ConfigProblem(path, f"no {channel.value} provider {name!r} (known: {choices})", "unknown_provider")
            for path, name in named
            if name not in names
        ]
    return problems
