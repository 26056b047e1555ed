"""The tenant config: a versioned document validated by a schema, changed by JSON merge patches.

- :mod:`.schema`: the document's sections (pydantic); the place to add a key.
- :mod:`.validation`: errors that name the dotted path and say why.
- :mod:`.stored`: reading stored rows (older shapes upgraded, invalid keys dropped, never a crash).
- :mod:`.patch`: RFC 7396 merge, changed paths, the platform's allow-list of tenant-editable keys.
- :mod:`.cache`: each process's parsed configs, refreshed when ``tenants.config_version`` moves.
- :mod:`.store`: Postgres rows, changes under a row lock with their audit record.
"""

from .cache import TenantConfigCache
from .patch import DEFAULT_TENANT_EDITABLE, EditPolicy, changed_paths, merge_patch
from .schema import MANAGED_KEYS, ChannelProviders, ProvidersConfig, Section, TenantConfig, check_paths
from .stored import read_stored, upgrade
from .validation import ConfigInvalid, ConfigProblem, unknown_providers, validate_config

__all__ = [
    "DEFAULT_TENANT_EDITABLE",
    "MANAGED_KEYS",
    "ChannelProviders",
    "ConfigInvalid",
    "ConfigProblem",
    "EditPolicy",
    "ProvidersConfig",
    "Section",
    "TenantConfig",
    "TenantConfigCache",
    "changed_paths",
    "check_paths",
    "merge_patch",
    "read_stored",
    "unknown_providers",
    "upgrade",
    "validate_config",
]
