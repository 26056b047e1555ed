"""What a render knows beyond the variables: whose message it is and how links are made."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class RenderContext:
    """Per-message facts for rendering.

    ``tracking`` turns ``link()`` URLs into signed click redirects under ``base_url`` and puts an open
    pixel into HTML email (both need ``link_secret`` and ``message_id``; without them links stay untracked
    and preview says so). ``unsubscribe_url`` is offered to templates when ``link_secret``, ``tenant`` and
    ``recipient`` are known; it unsubscribes from ``category`` (every category when ``None``), signed with
    the tenant's key of ``unsubscribe_generation``.
    ``timezone`` (IANA name) is where ``format_datetime`` shows times.
    """

    tenant: str | None = None
    message_id: str | None = None
    tracking: bool = False
    base_url: str = "http://127.0.0.1:8000"
    link_secret: str = ""
    recipient: str | None = None
    timezone: str = "UTC"
    category: str | None = None
    unsubscribe_generation: int = 0  #: the tenant's unsubscribe key generation (engine.templating.links)
