"""Identifiers: time-ordered UUIDv7 keys, shown to users as ``msg_<hex>``."""

from __future__ import annotations

import uuid

import uuid_utils

MESSAGE_PREFIX = "msg_"


def new_id() -> uuid.UUID:
    return uuid.UUID(bytes=uuid_utils.uuid7().bytes)


def format_message_id(message_id: uuid.UUID) -> str:
    return MESSAGE_PREFIX + message_id.hex


def parse_message_id(public_id: str) -> uuid.UUID | None:
    """The UUID behind ``msg_<32 hex>``; ``None`` for anything malformed (the API answers 404)."""
    if not public_id.startswith(MESSAGE_PREFIX):
        return None
    raw = public_id[len(MESSAGE_PREFIX) :]
    if len(raw) != 32:
        return None
    try:
        return uuid.UUID(hex=raw)
    except ValueError:
        return None
