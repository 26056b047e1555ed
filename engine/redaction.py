"""Masking of personal data and secrets in log output, at every level.

Addresses, phone numbers, bearer tokens, JWTs and passwords in URLs are masked in the formatted message
of every record that passes through handlers carrying :class:`RedactingFilter` (``install`` puts it
on the root handlers, so library loggers such as botocore and httpx are covered too).
"""

from __future__ import annotations

import logging
import re

_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"(?i)(bearer\s+)[A-Za-z0-9._~+/=-]+"), r"\1***"),
    (re.compile(r"\beyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+"), "***jwt***"),
    (re.compile(r"(?i)((?:api[_-]?key|token|secret|password|authorization)\"?\s*[:=]\s*\"?)[^\s\",&]+"), r"\1***"),
    (re.compile(r"(://[^:/@\s]+:)[^@/\s]+@"), r"\1***@"),
    # any script (ünïcode@exämple.com) and any domain with a dot (a@b.c): str patterns match Unicode \w
    (re.compile(r"([\w%+-])[\w.%+-]*@([\w-]+(?:\.[\w-]+)+)"), r"\1***@\2"),
    (re.compile(r"(?<![\w])\+?(\d{1,3})\d{5,11}(\d{2})\b"), r"+\1*****\2"),
)


def redact(text: str) -> str:
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text


class RedactingFilter(logging.Filter):
    """Rewrites each record's message (with its arguments applied) in masked form."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        masked = redact(message)
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        if masked != message or record.args:
            record.msg, record.args = masked, None
        return True


#: Libraries that log a line per request or connection at INFO: the emulators' and health checks' traffic.
CHATTY_LOGGERS = ("httpx", "werkzeug")

FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"


def install(root: logging.Logger | None = None) -> None:
    """Put the filter on every handler of ``root`` (default: the root logger) and on ``logging.lastResort``.

    The last resort is what prints a warning in a process that configured no handler, a Ray worker's
    (the senders', the relay's): without the filter there, their warnings went out unmasked.
    """
    logger = root or logging.getLogger()
    handlers = list(logger.handlers)
    if root is None and logging.lastResort is not None:
        handlers.append(logging.lastResort)
    for handler in handlers:
        if not any(isinstance(f, RedactingFilter) for f in handler.filters):
            handler.addFilter(RedactingFilter())


def configure(level: str) -> None:
    """Log to stderr at ``level`` in Herald's format, masked; the chatty libraries at WARNING unless DEBUG."""
    logging.basicConfig(level=level.upper(), format=FORMAT)
    if logging.getLogger().level > logging.DEBUG:
        for name in CHATTY_LOGGERS:
            logging.getLogger(name).setLevel(logging.WARNING)
    install()
