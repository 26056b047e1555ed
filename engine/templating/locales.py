"""Locale tags: normalization (``en_gb`` -> ``en-GB``) and the fallback chain."""

from __future__ import annotations

import re
from functools import lru_cache

from .errors import InvalidLocale

_TAG = re.compile(r"^[A-Za-z]{2,3}(?:[-_][A-Za-z0-9]{2,8}){0,3}$")


@lru_cache(maxsize=1024)
def normalize_locale(tag: str) -> str:
    """``en_gb`` -> ``en-GB``, ``zh-hant-tw`` -> ``zh-Hant-TW``.

    Raises:
        InvalidLocale: not a locale tag (this also keeps path separators out of file lookups).
    """
    if not isinstance(tag, str) or not _TAG.match(tag):
        raise InvalidLocale(f"{tag!r} is not a locale tag (expected e.g. 'en' or 'en-GB')")
    first, *rest = re.split(r"[-_]", tag)
    parts = [first.lower()]
    for sub in rest:
        if len(sub) == 4 and sub.isalpha():
            parts.append(sub.title())  # script: Hant, Latn
        elif len(sub) in (2, 3) and (sub.isalpha() or sub.isdigit()):
            parts.append(sub.upper())  # region: GB, 419
        else:
            parts.append(sub.lower())  # variant
    return "-".join(parts)


def language(tag: str) -> str:
    return tag.split("-", 1)[0]


@lru_cache(maxsize=4096)
def locale_chain(locale: str, tenant_default: str | None, manifest_default: str) -> tuple[str, ...]:
    """exact (``en-GB``) -> language (``en``) -> tenant default (and its language) -> manifest default.

    Raises:
        InvalidLocale: one of the tags is malformed.
    """
    chain: list[str] = []
    for candidate in (locale, tenant_default, manifest_default):
        if not candidate:
            continue
        tag = normalize_locale(candidate)
        for option in (tag, language(tag)):
            if option not in chain:
                chain.append(option)
    return tuple(chain)


def babel_locale_name(tag: str) -> str:
    """``en-GB`` -> ``en_GB`` (Babel's spelling)."""
    return tag.replace("-", "_")
