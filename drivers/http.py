"""What the HTTP drivers share: httpx's transport errors in the toolkit's terms, and reading an answer."""

from __future__ import annotations

from typing import Any

import httpx

from drivers.toolkit import TransportErrors

#: httpx: a failed connect (refused, DNS, TLS) or connect timeout sent nothing; any other timeout or
#: broken connection came after the request went out (a pool timeout too, to be safe: retried in place).
HTTPX_ERRORS = TransportErrors(
    unreachable=(httpx.ConnectError, httpx.ConnectTimeout),
    timed_out=(httpx.TimeoutException,),
    broken=(httpx.TransportError,),
)


def json_body(response: httpx.Response) -> dict[str, Any]:
    """The answer's JSON object; empty when the body is not one (an HTML error page, nothing at all)."""
    try:
        doc = response.json()
    except ValueError:
        return {}
    return doc if isinstance(doc, dict) else {}
