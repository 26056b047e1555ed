"""DSN helpers."""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit


def with_database(dsn: str, database: str) -> str:
    """The same server, another database (works for TCP and unix-socket DSNs)."""
    parts = urlsplit(dsn)
    return urlunsplit(parts._replace(path="/" + database))


def redact_dsn(dsn: str) -> str:
    """A DSN safe to log: the password is masked."""
    parts = urlsplit(dsn)
    if parts.password:
        netloc = parts.netloc.replace(":" + parts.password + "@", ":***@")
        parts = parts._replace(netloc=netloc)
    return urlunsplit(parts)
