"""Vocabulary shared by the API, the engine and the drivers."""

from __future__ import annotations

from enum import StrEnum


class Channel(StrEnum):
    EMAIL = "email"
    SMS = "sms"
    PUSH = "push"
    WHATSAPP = "whatsapp"
    INAPP = "inapp"


class Priority(StrEnum):
    HIGH = "high"
    NORMAL = "normal"
    LOW = "low"

    @property
    def rank(self) -> int:
        """0 is served first."""
        return _RANK[self]


_RANK = {Priority.HIGH: 0, Priority.NORMAL: 1, Priority.LOW: 2}

#: Serving order of the priority queues.
PRIORITY_ORDER: tuple[Priority, ...] = (Priority.HIGH, Priority.NORMAL, Priority.LOW)


def priority_queue(priority: Priority) -> str:
    return f"notifications.{priority.value}"


def dlq_queue(channel: Channel) -> str:
    return f"notifications.dlq.{channel.value}"


#: The dead-letter copies for outside consumers (capped; PostgreSQL is the DLQ's truth).
DLQ_QUEUES: tuple[str, ...] = tuple(dlq_queue(c) for c in Channel)
ALL_QUEUES: tuple[str, ...] = tuple(priority_queue(p) for p in PRIORITY_ORDER) + DLQ_QUEUES
