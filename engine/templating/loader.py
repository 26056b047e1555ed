"""Partials for ``{% include "header.html" %}``: looked up along the same locale chain as the template."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from jinja2 import BaseLoader, Environment, TemplateNotFound

from .sources import TemplateSource, is_partial_name


class PartialLoader(BaseLoader):
    """Finds ``<locale>/_partials/<name>`` in each (source, locale) pair in order: a tenant's own partials
    first (when the template is the tenant's), then the shipped ones, each along the locale chain."""

    def __init__(self, search: Sequence[tuple[TemplateSource, str]]) -> None:
        self.search = tuple(search)

    def get_source(self, environment: Environment, template: str) -> tuple[str, str | None, Callable[[], bool] | None]:
        if is_partial_name(template):
            for source, locale in self.search:
                text = source.partial(locale, template)
                if text is not None:
                    # Published partials do not change in a running process: always up to date.
                    return text, f"{locale}/_partials/{template}", lambda: True
        raise TemplateNotFound(template)
