"""Keyset cursors: the position after the last item of a page, newest first.

A cursor is opaque to clients (``next_cursor`` handed back as ``cursor``); it only says where to go on, so
the query still applies the caller's scope and filters. Each list has its own kind, so a cursor of one
list is refused by another.
"""

from __future__ import annotations

import base64
import binascii
import uuid
from dataclasses import dataclass
from datetime import datetime

from engine.models import FieldError
from engine.problems import ApiProblem


@dataclass(frozen=True, slots=True)
class Position:
    at: datetime
    id: uuid.UUID


def encode_cursor(kind: str, position: Position) -> str:
    raw = f"{kind}|{position.at.isoformat()}|{position.id.hex}"
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_cursor(kind: str, cursor: str | None) -> Position | None:
    """Raises: ApiProblem 422 naming ``query.cursor`` for anything this list did not hand out."""
    if not cursor:
        return None
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        found, at, hex_id = raw.split("|")
        if found != kind:
            raise ValueError(kind)
        position = Position(datetime.fromisoformat(at), uuid.UUID(hex=hex_id))
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise ApiProblem(
            422, "unknown cursor", errors=[FieldError(("query", "cursor"), "pass back the next_cursor of a page")]
        ) from None
    if position.at.tzinfo is None:
        raise ApiProblem(422, "unknown cursor", errors=[FieldError(("query", "cursor"), "not a cursor of this list")])
    return position
