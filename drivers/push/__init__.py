"""Push drivers (FCM HTTP v1, APNs over HTTP/2) and the options they share.

Per-message push options travel in ``OutboundMessage.extra["push"]``::

    {"collapse_id": "order_1234",      # FCM android.collapse_key / apns-collapse-id (<= 64 bytes)
     "push_type": "alert",             # APNs apns-push-type (alert, background, voip, ...)
     "sound": "default", "badge": 1,   # aps fields
     "android": {...}, "apns": {...}, "webpush": {...}, "fcm_options": {...},   # FCM overrides, merged
     "aps": {...}}                     # APNs aps overrides, merged

``priority == "high"`` maps to FCM ``high`` / APNs 10, otherwise ``normal`` / 5 (power-considerate);
``ttl_seconds`` maps to ``android.ttl`` and an absolute ``apns-expiration``.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from engine.delivery import OutboundMessage
from engine.errors import BadRecipientError, PermanentError

PUSH_KEY = "push"
#: APNs push types (apns-push-type).
APNS_PUSH_TYPES = frozenset(
    {
        "alert",
        "background",
        "voip",
        "complication",
        "fileprovider",
        "mdm",
        "liveactivity",
        "location",
        "pushtotalk",
        "widgets",
    }
)


@dataclass(frozen=True, slots=True)
class PushOptions:
    high_priority: bool
    ttl_seconds: int | None = None
    collapse_id: str | None = None
    push_type: str | None = None
    sound: str | None = None
    badge: int | None = None
    overrides: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def from_message(cls, message: OutboundMessage) -> PushOptions:
        """Read the options of one message.

        Raises:
            PermanentError: a malformed option (unknown push type, collapse id over 64 bytes).
        """
        raw = message.extra.get(PUSH_KEY) or {}
        if not isinstance(raw, Mapping):
            raise PermanentError("extra.push must be an object", code="bad_push_options")
        collapse = raw.get("collapse_id")
        if collapse is not None and len(str(collapse).encode()) > 64:
            raise PermanentError("collapse_id is over 64 bytes", code="bad_push_options")
        push_type = raw.get("push_type")
        if push_type is not None and push_type not in APNS_PUSH_TYPES:
            raise PermanentError(f"unknown push_type {push_type!r}", code="bad_push_options")
        badge = raw.get("badge")
        return cls(
            high_priority=message.priority == "high",
            ttl_seconds=message.ttl_seconds,
            collapse_id=str(collapse) if collapse is not None else None,
            push_type=push_type,
            sound=raw.get("sound"),
            badge=int(badge) if badge is not None else None,
            overrides=raw,
        )

    def expiration(self, now_s: float | None = None) -> int | None:
        """APNs ``apns-expiration``: absolute unix seconds (a relative value would mean 1970)."""
        if self.ttl_seconds is None:
            return None
        return int(now_s if now_s is not None else time.time()) + self.ttl_seconds


def device_token(message: OutboundMessage, provider: str) -> str:
    """The recipient's device token.

    Raises:
        BadRecipientError: the message has no token.
    """
    token = (message.to.device_token or "").strip()
    if not token:
        raise BadRecipientError("no device token on the recipient", provider=provider, code="missing_token")
    return token


def deep_merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """``override`` wins; nested objects merge key by key."""
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def mask_token(token: str) -> str:
    """A device token shown in logs and details: the first and last four characters."""
    return f"{token[:4]}…{token[-4:]}" if len(token) > 12 else "…"


class DeviceTokenLogFilter(logging.Filter):
    """Masks device tokens in logged request paths (``HTTP Request: POST …/3/device/<token>``)."""

    _TOKEN_IN_PATH = re.compile(r"(/device/)([^/\s\"?]+)")

    def filter(self, record: logging.LogRecord) -> bool:
        if record.args and isinstance(record.args, tuple):
            record.args = tuple(
                self._TOKEN_IN_PATH.sub(lambda m: m.group(1) + mask_token(m.group(2)), str(a))
                if "/device/" in str(a)
                else a
                for a in record.args
            )
        return True


#: Loggers that print request paths: httpx (INFO, the URL) and hpack (DEBUG, the ``:path`` header).
PATH_LOGGERS = ("httpx", "hpack.hpack")


def install_device_token_filter() -> None:
    """Attach the filter to the loggers that print request paths, once (idempotent)."""
    for name in PATH_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, DeviceTokenLogFilter) for f in logger.filters):
            logger.addFilter(DeviceTokenLogFilter())
