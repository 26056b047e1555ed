"""SendGrid v3 Mail Send emulator (starlette + uvicorn on a loopback port, in a background thread).

``POST /v3/mail/send`` is validated as SendGrid does: Bearer auth (401), ``personalizations`` with ``to``
addresses, ``from.email``, ``subject`` (top level or in every personalization), ``content`` (unless
``template_id``), well-formed addresses (400 naming the field); success is ``202`` with an empty body and
an ``X-Message-Id`` header. Control: ``POST /_fault`` ``{"status", "body", "headers", "count",
"latency_ms", "outage"}``, ``GET /_received``, ``POST /_reset``.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import re
import secrets
import socket
import threading
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

API_KEY = "SG.emulator-key.emulator-secret-0001"
FROM_EMAIL = "no-reply@herald.local"
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[A-Za-z]{2,}$")
_UNAUTHORIZED = {
    "errors": [
        {"message": "The provided authorization grant is invalid, expired, or revoked", "field": None, "help": None}
    ]
}


def sg_error(message: str, field_name: str | None = None) -> dict[str, Any]:
    return {"errors": [{"message": message, "field": field_name, "help": None}]}


class ServerThread:
    """Serve an ASGI app with uvicorn on 127.0.0.1 (free port) in a daemon thread with its own loop."""

    def __init__(self, app: Any, name: str) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        self._sock = sock
        self.port = int(sock.getsockname()[1])
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off")
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._run, name=f"fake-{name}", daemon=True)
        self._thread.start()
        for _ in range(500):
            if self._server.started:
                return
            if not self._thread.is_alive():
                break
            threading.Event().wait(0.01)
        raise RuntimeError(f"{name} emulator did not start")

    def _run(self) -> None:
        asyncio.run(self._server.serve(sockets=[self._sock]))

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(10)
        with contextlib.suppress(OSError):
            self._sock.close()


@dataclass
class FaultPlan:
    """Scripted answers: ``count`` requests get ``status``/``body``; ``outage`` answers every request."""

    status: int = 503
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    count: int = 0
    latency_ms: int = 0
    outage: bool = False

    def response(self) -> Response:
        if self.body is None:
            return Response(status_code=self.status, headers=self.headers)
        if isinstance(self.body, str):
            return Response(self.body, status_code=self.status, headers=self.headers)
        return JSONResponse(self.body, status_code=self.status, headers=self.headers)


class SendgridState:
    def __init__(self, api_key: str = API_KEY) -> None:
        self.api_key = api_key
        self.received: list[dict[str, Any]] = []
        self.plan = FaultPlan()
        self.lock = threading.Lock()

    def take_fault(self) -> tuple[FaultPlan | None, int]:
        """The fault to answer with now (if any) and the latency to add."""
        with self.lock:
            plan = self.plan
            if plan.outage:
                return plan, plan.latency_ms
            if plan.count > 0:
                plan.count -= 1
                return plan, plan.latency_ms
            return None, plan.latency_ms


def validate(doc: Any) -> dict[str, Any] | None:  # noqa: C901 - SendGrid's checks, in its order
    """The 400 body SendGrid would answer, or None when the request is valid."""
    if not isinstance(doc, dict):
        return sg_error("Bad Request", None)
    personalizations = doc.get("personalizations")
    if not isinstance(personalizations, list) or not personalizations:
        return sg_error(
            "The personalizations field is required and must have at least one personalization.", "personalizations"
        )
    for i, p in enumerate(personalizations):
        to = p.get("to") if isinstance(p, dict) else None
        if not isinstance(to, list) or not to:
            return sg_error("The to array is required for all personalization objects.", f"personalizations.{i}.to")
        for j, person in enumerate(to):
            if not isinstance(person, dict) or not _EMAIL.match(str(person.get("email", ""))):
                return sg_error("Does not contain a valid address.", f"personalizations.{i}.to.{j}.email")
    sender = doc.get("from")
    if not isinstance(sender, dict) or not sender.get("email"):
        return sg_error("The from object must be provided for every email send.", "from")
    if not _EMAIL.match(str(sender["email"])):
        return sg_error("The from email does not contain a valid address.", "from.email")
    has_template = bool(doc.get("template_id"))
    if not doc.get("subject") and not has_template and not all(p.get("subject") for p in personalizations):
        return sg_error(
            "The subject is required. You can get around this requirement if you use a template "
            "with a subject defined or if every personalization has a subject defined.",
            "subject",
        )
    content = doc.get("content")
    if not has_template and (not isinstance(content, list) or not content):
        return sg_error("Unless a valid template_id is provided, the content parameter is required.", "content")
    for k, block in enumerate(content or []):
        if not isinstance(block, dict) or not block.get("type") or not isinstance(block.get("value"), str):
            return sg_error("The content value must be a string at least one character in length.", f"content.{k}")
    headers = doc.get("headers", {})
    if not isinstance(headers, dict) or not all(isinstance(v, str) for v in headers.values()):
        return sg_error("Invalid type. Expected: object, given: other.", "headers")
    categories = doc.get("categories", [])
    if len(categories) > 10:
        return sg_error("Too many categories. The maximum number of categories is 10.", "categories")
    return None


def build_app(state: SendgridState) -> Starlette:
    async def mail_send(request: Request) -> Response:
        raw = await request.body()
        try:
            doc: Any = json.loads(raw or b"null")
        except ValueError:
            doc = raw.decode(errors="replace")
        headers = {k: ("***" if k == "authorization" else v) for k, v in request.headers.items()}
        with state.lock:
            state.received.append({"method": "POST", "path": request.url.path, "headers": headers, "body": doc})
        fault, latency_ms = state.take_fault()
        if latency_ms:
            await asyncio.sleep(latency_ms / 1000)
        if fault is not None:
            return fault.response()
        auth = request.headers.get("authorization", "")
        if not (auth.startswith("Bearer ") and secrets.compare_digest(auth[7:].strip(), state.api_key)):
            return JSONResponse(_UNAUTHORIZED, status_code=401)
        problem = validate(doc)
        if problem is not None:
            return JSONResponse(problem, status_code=400)
        message_id = base64.urlsafe_b64encode(secrets.token_bytes(16)).decode().rstrip("=")[:22]
        return Response(status_code=202, headers={"X-Message-Id": message_id})

    async def fault(request: Request) -> Response:
        doc = await request.json()
        with state.lock:
            state.plan = FaultPlan(
                status=int(doc.get("status", 503)),
                body=doc.get("body"),
                headers=dict(doc.get("headers") or {}),
                count=int(doc.get("count", 1 if "status" in doc else 0)),
                latency_ms=int(doc.get("latency_ms", 0)),
                outage=bool(doc.get("outage", False)),
            )
        return JSONResponse({"ok": True})

    async def received(request: Request) -> Response:
        with state.lock:
            return JSONResponse(list(state.received))

    async def reset(request: Request) -> Response:
        with state.lock:
            state.received.clear()
            state.plan = FaultPlan()
        return JSONResponse({"ok": True})

    return Starlette(
        routes=[
            Route("/v3/mail/send", mail_send, methods=["POST"]),
            Route("/_fault", fault, methods=["POST"]),
            Route("/_received", received, methods=["GET"]),
            Route("/_reset", reset, methods=["POST"]),
        ]
    )


class SendgridHandle:
    """A running SendGrid emulator: ``.url``, ``.received``, ``.fail(...)``, ``.reset()``, ``.stop()``."""

    def __init__(self, api_key: str = API_KEY) -> None:
        self.state = SendgridState(api_key)
        self.server = ServerThread(build_app(self.state), "sendgrid")
        self.url = self.server.url
        self.api_key = api_key

    @property
    def received(self) -> list[dict[str, Any]]:
        with self.state.lock:
            return list(self.state.received)

    def fail(
        self,
        status: int = 503,
        body: Any = None,
        *,
        count: int = 1,
        latency_ms: int = 0,
        outage: bool = False,
        headers: dict[str, str] | None = None,
    ) -> None:
        with self.state.lock:
            self.state.plan = FaultPlan(status, body, dict(headers or {}), count, latency_ms, outage)

    def reset(self) -> None:
        with self.state.lock:
            self.state.received.clear()
            self.state.plan = FaultPlan()

    def env(self) -> dict[str, str]:
        return {
            "HERALD_SENDGRID_API_KEY": self.api_key,
            "HERALD_SENDGRID_BASE_URL": self.url,
            "HERALD_SENDGRID_FROM": f"Herald <{FROM_EMAIL}>",
        }

    def stop(self) -> None:
        self.server.stop()


def start_sendgrid(api_key: str = API_KEY) -> SendgridHandle:
    return SendgridHandle(api_key)
