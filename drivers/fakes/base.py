"""What every provider emulator shares: the server thread, the fault plan, the recorder, the control
endpoints and the notifier that calls back the way providers do. Emulators import this module and
nothing of each other.

An HTTP emulator subclasses :class:`Emulator` (an ASGI app) and implements :meth:`Emulator.handle`; it is
served on a loopback port by :class:`RunningEmulator`. Control endpoints, the same on every HTTP
emulator: ``POST /_fault`` (``{"status", "body", "headers", "count", "after", "latency_ms", "outage",
"path"}``), ``GET /_received``, ``POST /_reset``, ``POST /_state`` (emulator-specific), ``GET /_callbacks``
(what the emulator posted back and how Herald answered). Emulators that do not speak HTTP/1.1 (SMTP,
APNs' HTTP/2) keep their own server and use :class:`FaultPlan` and :class:`Emulator` the same way.

An emulator whose provider reports deliveries (status callbacks, event webhooks, SNS notifications)
posts them, signed as the provider signs them, through its :class:`Notifier`: a little after the send
(so the sender has recorded it, as with a real provider), retrying on 5xx and connection failures.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import threading
import urllib.parse
from dataclasses import asdict, dataclass, field
from typing import Any

import httpx

#: (status, headers, body) of one emulated answer.
Answer = tuple[int, dict[str, str], bytes]


def json_answer(status: int, doc: Any, headers: dict[str, str] | None = None) -> Answer:
    return status, {"content-type": "application/json", **(headers or {})}, json.dumps(doc).encode()


class ServerThread:
    """Serve an ASGI app with uvicorn on 127.0.0.1 (free port) in a daemon thread with its own loop."""

    def __init__(self, app: Any, name: str) -> None:
        import uvicorn  # the fakes extra; imported here so the scaffolding loads without it

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
class Fault:
    """A scripted answer for requests whose path (or stage) contains ``path``: the first ``after`` of them
    pass, then the next ``count`` (all of them while ``outage``) get it, after ``latency_ms``.
    ``status=0`` only adds the latency. ``body`` is sent as JSON, as-is when it is a string (XML: set
    ``content-type``), or not at all."""

    status: int = 503
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    count: int = 1
    latency_ms: int = 0
    outage: bool = False
    path: str = ""
    after: int = 0

    def answer(self) -> Answer:
        if self.body is None:
            return self.status, dict(self.headers), b""
        if isinstance(self.body, str):
            return self.status, dict(self.headers), self.body.encode()
        return json_answer(self.status, self.body, self.headers)


class FaultPlan:
    """Scripted faults in the order they were added; thread-safe (emulators serve from their own thread)."""

    def __init__(self) -> None:
        self.faults: list[Fault] = []
        self._lock = threading.Lock()

    def add(self, fault: Fault) -> None:
        with self._lock:
            self.faults.append(fault)

    def clear(self) -> None:
        with self._lock:
            self.faults.clear()

    def take(self, key: str) -> Fault | None:
        """The fault that answers this request (``key``: its path or stage), if any."""
        with self._lock:
            fault = next((f for f in self.faults if f.path in key), None)
            if fault is None:
                return None
            if fault.after > 0:
                fault.after -= 1
                return None
            if not fault.outage:
                fault.count -= 1
                if fault.count <= 0:
                    self.faults.remove(fault)
            return fault


@dataclass(frozen=True)
class Exchange:
    """One request as an emulator sees it (header names lower-case)."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    base_url: str
    http_version: str = "1.1"
    query: str = ""  #: the raw query string, without ``?``


@dataclass
class Received:
    method: str
    path: str
    headers: dict[str, str]  #: ``authorization`` is masked
    body: Any  #: JSON, form fields, or text
    http_version: str = "1.1"


@dataclass(frozen=True)
class Callback:
    """One request an emulated provider makes to the webhook it was given."""

    url: str
    body: bytes
    headers: dict[str, str]


@dataclass
class CallbackRecord:
    """What became of one callback: the last status Herald answered (None: never reached) after attempts."""

    url: str
    status: int | None
    attempts: int
    body: str
    answer: str | None = None  #: what Herald answered the last attempt (TwiML for a Twilio reply)


class Notifier:
    """Posts callbacks from the emulator's own event loop, after ``delay_s``, in the order they were
    queued for one message (``post`` takes them as a sequence); 5xx and connection failures are retried
    ``attempts`` times, ``backoff_s`` apart, as providers retry."""

    def __init__(self, *, delay_s: float = 0.3, attempts: int = 4, backoff_s: float = 0.5) -> None:
        self.delay_s = delay_s
        self.attempts = attempts
        self.backoff_s = backoff_s
        self.records: list[CallbackRecord] = []
        self._client: httpx.AsyncClient | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._lock = threading.Lock()

    def post(self, *callbacks: Callback, delay_s: float | None = None) -> None:
        """Queue ``callbacks`` (posted one after the other). Call it from the emulator's event loop."""
        wait = self.delay_s if delay_s is None else delay_s
        task = asyncio.get_running_loop().create_task(self._run(callbacks, wait))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, callbacks: tuple[Callback, ...], delay_s: float) -> None:
        await asyncio.sleep(delay_s)
        for callback in callbacks:
            await self._deliver(callback)

    async def _deliver(self, callback: Callback) -> None:
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=10, trust_env=False)
        status: int | None = None
        answer: str | None = None
        attempt = 0
        for attempt in range(1, self.attempts + 1):
            try:
                response = await self._client.post(callback.url, content=callback.body, headers=callback.headers)
                status, answer = response.status_code, response.text[:2000]
            except httpx.HTTPError:
                status, answer = None, None
            if (status is not None and status < 500) or attempt == self.attempts:
                break
            await asyncio.sleep(self.backoff_s * attempt)
        record = CallbackRecord(callback.url, status, attempt, callback.body.decode(errors="replace"), answer)
        with self._lock:
            self.records.append(record)

    def reset(self) -> None:
        with self._lock:
            self.records.clear()

    def report(self) -> list[dict[str, Any]]:
        with self._lock:
            return [asdict(r) for r in self.records]


class Emulator:
    """Base of an emulator: subclasses implement :meth:`handle` (or :meth:`handle_async` when answering
    needs I/O), and may implement :meth:`reset_state` and :meth:`control`. An instance is an ASGI app."""

    name = "emulator"

    def __init__(self) -> None:
        self.plan = FaultPlan()
        self.received: list[Received] = []
        self.notifier = Notifier()
        self._lock = threading.Lock()

    def handle(self, request: Exchange) -> Answer:
        raise NotImplementedError

    async def handle_async(self, request: Exchange) -> Answer:
        return self.handle(request)

    def reset_state(self) -> None:
        """Forget what the emulated provider learned (tokens, opt-outs)."""

    def control(self, doc: dict[str, Any]) -> dict[str, Any]:
        """Change the emulated provider's state (``POST /_state``)."""
        return {}

    def fault_answer(self, fault: Fault, request: Exchange) -> Answer:
        """How a scripted fault is written on the wire (an emulator whose errors depend on the request's
        protocol overrides it)."""
        return fault.answer()

    def fail(
        self,
        status: int = 503,
        body: Any = None,
        *,
        count: int = 1,
        after: int = 0,
        latency_ms: int = 0,
        outage: bool = False,
        path: str = "",
        headers: dict[str, str] | None = None,
    ) -> None:
        self.plan.add(Fault(status, body, dict(headers or {}), count, latency_ms, outage, path, after))

    def reset(self) -> None:
        self.plan.clear()
        with self._lock:
            self.received.clear()
        self.notifier.reset()
        self.reset_state()

    def accepted(self) -> int:
        """Requests recorded so far (a count for tests; faults answered are included)."""
        with self._lock:
            return len(self.received)

    async def respond(self, request: Exchange) -> Answer:
        """Control endpoints; else record, wait out a scripted latency, then a scripted fault or the
        provider's own answer."""
        control = self._control(request)
        if control is not None:
            return control
        self._record(request)
        fault = self.plan.take(request.path)
        if fault is not None and fault.latency_ms:
            await asyncio.sleep(fault.latency_ms / 1000)
        if fault is not None and fault.status:
            return self.fault_answer(fault, request)
        return await self.handle_async(request)

    def _control(self, request: Exchange) -> Answer | None:
        path, post = request.path, request.method == "POST"
        if path == "/_fault" and post:
            doc = json.loads(request.body or b"{}")
            self.fail(
                int(doc.get("status", 503)),
                doc.get("body"),
                count=int(doc.get("count", 1)),
                after=int(doc.get("after", 0)),
                latency_ms=int(doc.get("latency_ms", 0)),
                outage=bool(doc.get("outage", False)),
                path=str(doc.get("path", "")),
                headers=dict(doc.get("headers") or {}),
            )
            return json_answer(200, {"ok": True})
        if path == "/_received":
            with self._lock:
                return json_answer(200, [vars(r) for r in self.received])
        if path == "/_callbacks":
            return json_answer(200, self.notifier.report())
        if path == "/_reset" and post:
            self.reset()
            return json_answer(200, {"ok": True})
        if path == "/_state" and post:
            return json_answer(200, self.control(json.loads(request.body or b"{}")))
        return None

    def _record(self, request: Exchange) -> None:
        headers = {k: ("***" if k == "authorization" else v) for k, v in request.headers.items()}
        kind = request.headers.get("content-type", "")
        parsed: Any = request.body.decode(errors="replace")
        if "json" in kind:
            with contextlib.suppress(ValueError):  # else recorded as text, and answered as the provider would
                parsed = json.loads(request.body or b"null")
        elif "form" in kind:
            parsed = dict(urllib.parse.parse_qsl(parsed))
        with self._lock:
            self.received.append(Received(request.method, request.path, headers, parsed, request.http_version))

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return  # lifespan: nothing to set up
        chunks: list[bytes] = []
        while True:
            message = await receive()
            chunks.append(message.get("body", b""))
            if not message.get("more_body"):
                break
        host = dict(scope["headers"]).get(b"host", b"127.0.0.1").decode()
        request = Exchange(
            method=scope["method"],
            path=scope["path"],
            headers={k.decode().lower(): v.decode() for k, v in scope["headers"]},
            body=b"".join(chunks),
            base_url=f"{scope.get('scheme', 'http')}://{host}",
            http_version=scope.get("http_version", "1.1"),
            query=scope.get("query_string", b"").decode(),
        )
        status, headers, body = await self.respond(request)
        raw_headers = [(k.encode(), v.encode()) for k, v in headers.items()]
        await send({"type": "http.response.start", "status": status, "headers": raw_headers})
        await send({"type": "http.response.body", "body": body})


class RunningEmulator:
    """An emulator served on a loopback port: ``.emulator``, ``.url``, ``.port``, ``.stop()``."""

    def __init__(self, emulator: Emulator) -> None:
        self.emulator = emulator
        self._server = ServerThread(emulator, emulator.name)
        self.port = self._server.port
        self.url = self._server.url

    def stop(self) -> None:
        self._server.stop()
