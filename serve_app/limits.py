"""What a request may carry, checked before any route reads it: an ASGI middleware.

- A body over its limit is ``413`` (a declared ``Content-Length`` is refused before the route reads it; a
  chunked body is counted as it arrives and refused at the first chunk over). The rest of such a body is
  read and thrown away first, up to :data:`DRAIN_MAX_BYTES` past the limit: a client still sending when
  the connection closes gets a TCP reset, which can swallow the answer it was sent.
- A body that parses as JSON (the routes parse every body as JSON, whatever its content type) must nest
  at most :data:`MAX_JSON_DEPTH` containers (``400``): the standard parser recurses once per level, so
  ``[[[[...]]]]`` would otherwise end in a ``RecursionError`` inside the route. An integer too long for
  Python to convert is ``400`` too.
- Values PostgreSQL cannot store are ``422`` naming the field: strings with NUL or an unpaired surrogate,
  and numbers that are not finite (``NaN``, ``Infinity``, ``1e999``).
- A path with a NUL names nothing Herald stores (``404``); a query string with one is ``400``.

Everything else, including bodies that are not JSON at all, goes on untouched: the route answers them.
Answers are RFC 9457 problem+json in the API's envelope. The body limit is ``HERALD_MAX_BODY_BYTES``
(1 MiB); a route prefix may take its own, see :class:`RequestLimits`: provider webhooks (``/webhooks/``,
SendGrid's batches of a few thousand events) take ``HERALD_WEBHOOK_MAX_BODY_BYTES`` (5 MiB), and
``/api/batch`` takes 32 MiB; the batch route parses its own body and checks each item with
:func:`document_problem`, so a bad item is that item's error, not the whole request's.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field

from starlette.datastructures import Headers
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from engine.json_safety import MAX_JSON_DEPTH, document_problem, too_deep
from engine.problems import PROBLEM_CONTENT_TYPE, ApiProblem

MIB = 1024 * 1024
#: How much of a body past its limit is read and thrown away before the 413 (beyond it: answered at once).
DRAIN_MAX_BYTES = 8 * MIB
#: Where providers post their webhooks: their own body limit.
WEBHOOKS_PREFIX = "/webhooks"
#: Where batches of up to 10,000 notifications are posted: their own limit, each item checked by the route.
BATCH_PREFIX = "/api/batch"
BATCH_MAX_BODY_BYTES = 32 * MIB
_NUL_QUERY = re.compile(rb"%00|\x00")


@dataclass(frozen=True, slots=True)
class RequestLimits:
    """How large a request body may be, by path: the longest matching ``routes`` prefix, else ``max_bytes``.

    A prefix matches the path itself and everything under it (``/api/batch`` covers ``/api/batch`` and
    ``/api/batch/x``, not ``/api/batches``).
    """

    max_bytes: int = MIB
    max_json_depth: int = MAX_JSON_DEPTH
    routes: Mapping[str, int] = field(default_factory=dict)
    #: Prefixes whose routes check their JSON themselves (the body is only size-limited here).
    unchecked: frozenset[str] = frozenset()

    @classmethod
    def from_env(
        cls, env: Mapping[str, str] | None = None, *, routes: Mapping[str, int] | None = None
    ) -> RequestLimits:
        """The limits of the process serving HTTP (``HERALD_MAX_BODY_BYTES``; ``/webhooks`` takes
        ``HERALD_WEBHOOK_MAX_BODY_BYTES``), plus the per-prefix ones given.

        Raises:
            ConfigurationError: a setting has a bad value (it names the variable).
        """
        from engine.settings import load_settings

        settings = load_settings(env)
        prefixes = {WEBHOOKS_PREFIX: settings.webhook_max_body_bytes, BATCH_PREFIX: BATCH_MAX_BODY_BYTES}
        prefixes.update(routes or {})
        return cls(max_bytes=settings.max_body_bytes, routes=prefixes, unchecked=frozenset({BATCH_PREFIX}))

    def for_path(self, path: str) -> int:
        best, limit = -1, self.max_bytes
        for prefix, prefix_limit in self.routes.items():
            base = prefix.rstrip("/")
            if _under(path, base) and len(base) > best:
                best, limit = len(base), prefix_limit
        return limit

    def checks_json(self, path: str) -> bool:
        return not any(_under(path, prefix.rstrip("/")) for prefix in self.unchecked)


def _under(path: str, base: str) -> bool:
    return path == base or path.startswith(base + "/")


def json_body_problem(body: bytes, *, max_depth: int = MAX_JSON_DEPTH) -> ApiProblem | None:
    """Why the routes must not be handed ``body``, or None (also for a body that is not JSON at all).

    Parses as the routes do (``json.loads`` on the bytes), then walks the document once without recursion.
    """
    try:
        doc = json.loads(body)
    except RecursionError:
        return too_deep(max_depth)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None  # not JSON: the route says so (400), or reads it as what it is
    except ValueError:  # an integer literal past Python's int/str conversion limit
        return ApiProblem(400, f"the JSON body holds an integer longer than {sys.get_int_max_str_digits()} digits")
    return document_problem(doc, max_depth=max_depth)


class RequestLimitMiddleware:
    """Bounds and checks each HTTP request as described in the module docstring, then hands it on."""

    def __init__(self, app: ASGIApp, *, limits: RequestLimits | None = None) -> None:
        self.app = app
        self.limits = limits or RequestLimits()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if "\x00" in scope["path"]:
            await _answer(scope, receive, send, ApiProblem(404, "no such resource (the path holds a NUL character)"))
            return
        if _NUL_QUERY.search(scope.get("query_string", b"")):
            await _answer(scope, receive, send, ApiProblem(400, "the query string holds a NUL character"))
            return
        headers = Headers(scope=scope)
        if "content-length" not in headers and "transfer-encoding" not in headers:
            await self.app(scope, receive, send)  # no body (HTTP/1.1): nothing to wait for
            return
        limit = self.limits.for_path(scope["path"])
        declared = headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            if int(declared) <= limit + DRAIN_MAX_BYTES and not await _drain(receive, limit + DRAIN_MAX_BYTES):
                return  # the client left: nobody to answer
            await _answer(scope, receive, send, _too_large(limit))
            return
        try:
            body = await _read(receive, limit)
        except _ClientGone:
            return  # nobody to answer
        if body is None:
            if not await _drain(receive, DRAIN_MAX_BYTES):
                return
            await _answer(scope, receive, send, _too_large(limit))
            return
        check = body and self.limits.checks_json(scope["path"])
        problem = json_body_problem(body, max_depth=self.limits.max_json_depth) if check else None
        if problem is not None:
            await _answer(scope, receive, send, problem)
            return
        await self.app(scope, _replay(body, receive), send)


class _ClientGone(Exception):
    """The client disconnected before its body was complete."""


async def _read(receive: Receive, limit: int) -> bytes | None:
    """The whole body, or None once it is past ``limit``.

    Raises:
        _ClientGone: the client disconnected first.
    """
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise _ClientGone
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


async def _drain(receive: Receive, max_bytes: int) -> bool:
    """Read and drop the rest of a body, up to ``max_bytes``; False when the client disconnected."""
    size = 0
    while size <= max_bytes:
        message = await receive()
        if message["type"] == "http.disconnect":
            return False
        size += len(message.get("body", b""))
        if not message.get("more_body", False):
            break
    return True


def _replay(body: bytes, receive: Receive) -> Receive:
    """The body as one message, then whatever the client sends next (a disconnect)."""
    pending = True

    async def replay() -> Message:
        nonlocal pending
        if pending:
            pending = False
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


def _too_large(limit: int) -> ApiProblem:
    return ApiProblem(413, f"the request body is larger than {limit} bytes")


async def _answer(scope: Scope, receive: Receive, send: Send, problem: ApiProblem) -> None:
    response = JSONResponse(
        problem.body(instance=scope["path"].replace("\x00", "\\x00")),
        status_code=problem.status,
        media_type=PROBLEM_CONTENT_TYPE,
        # An unread body stays on the connection, so it cannot carry another request.
        headers={"Connection": "close"} if problem.status == 413 else None,
    )
    await response(scope, receive, send)
