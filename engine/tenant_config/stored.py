"""Reading ``tenants.config`` rows: older shapes upgraded, and a bad key never stops a send.

Migration 0005 rewrites stored rows to the current shape; reading is tolerant as well, so a row written
by an older process during a rolling upgrade (or by hand) still serves. A key that does not validate is
dropped with a warning naming it (never its value), and its default applies.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError

from .schema import TenantConfig
from .validation import problems_of

log = logging.getLogger(__name__)


def upgrade(raw: Mapping[str, Any]) -> dict[str, Any]:
    """Today's shape of an older document: ``providers.<channel>: [..]`` becomes ``{"allow": [..]}``
    (an empty list, which narrowed nothing, goes)."""
    doc = copy.deepcopy(dict(raw))
    providers = doc.get("providers")
    if isinstance(providers, dict):
        for channel, value in list(providers.items()):
            if isinstance(value, list):
                if value:
                    providers[channel] = {"allow": value}
                else:
                    del providers[channel]
    return doc


def read_stored(region: str, raw: Mapping[str, Any] | None, *, tenant: object = None) -> TenantConfig:
    """The config a stored row describes; keys that do not validate are dropped and logged."""
    doc = upgrade(raw or {})
    doc["region"] = region
    for _ in range(32):  # each round drops at least one key, so this ends
        try:
            return TenantConfig.model_validate(doc)
        except ValidationError as err:
            dropped = [_drop(doc, p.path) for p in problems_of(err)]
            log.warning("tenant %s: stored config keys ignored (invalid): %s", tenant, ", ".join(dropped))
    return TenantConfig()


def _drop(doc: dict[str, Any], path: tuple[str | int, ...]) -> str:
    """Remove the key at ``path`` (an error in a list item drops the whole list); returns its dotted path."""
    keys: list[str] = []
    for part in path:
        if not isinstance(part, str):
            break
        keys.append(part)
    node: Any = doc
    for key in keys[:-1]:
        node = node.get(key) if isinstance(node, dict) else None
    if keys and isinstance(node, dict):
        node.pop(keys[-1], None)
    else:
        doc.clear()
    return ".".join(keys) or "(document)"
