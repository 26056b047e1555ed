"""What happened to one claimed message in one pass of a sender: the row storage writes per batch."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from engine.channels import Priority
from engine.states import EventType, Status


@dataclass(frozen=True, slots=True)
class TriedProvider:
    """A provider that failed this message earlier in the same pass (before it failed over): one more
    attempt row with the same attempt number."""

    provider: str | None
    started_at: datetime
    error_class: str | None = None
    error_code: str | None = None
    error_detail: str | None = None
    outcome: str = "failover"


@dataclass(frozen=True, slots=True)
class Outcome:
    message_id: uuid.UUID
    tenant_id: uuid.UUID
    status: Status
    event: EventType
    attempt_no: int
    started_at: datetime
    priority: Priority
    provider: str | None = None
    provider_message_id: str | None = None
    error_class: str | None = None
    error_code: str | None = None
    error_detail: str | None = None
    cost_usd: float | None = None
    #: Where an outbox row goes (a priority queue for a retry, the channel's DLQ for a dead letter).
    queue: str | None = None
    #: When that outbox row becomes due (retries); ``None`` means now.
    available_at: datetime | None = None
    #: Attempts given back (a provider-wide outage does not use up the message's attempts).
    refund_attempts: int = 0
    #: Whether this pass called a provider (an attempt row is written) or not (expired before sending).
    attempted: bool = True
    #: An address to put on the tenant's suppression list (``(kind, address)``), for bad recipients.
    suppress: tuple[str, str] | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    #: Providers tried before the last one in this pass (failovers), each an attempt row of its own.
    tried: tuple[TriedProvider, ...] = ()
    #: The attempt row's outcome when it is not the status (``unknown``: timed out after sending).
    attempt_outcome: str | None = None
    #: The earlier message a ``deduplicated`` one copies (``messages.deduplicated_of``).
    deduplicated_of: uuid.UUID | None = None
