"""moto (SES v2, S3, SNS) on a loopback port, behind a small fault-injecting proxy.

The proxy forwards every request to moto unless a fault is scripted, in which case it answers with an AWS
rest-json error (``x-amzn-ErrorType`` header + ``{"message": ...}``), as SES v2 does. The sender identities
in :data:`VERIFIED_IDENTITIES` are verified in moto so sends from them succeed; any other sender gets
moto's ``MessageRejected``.
"""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass, field
from typing import Any

import boto3
import httpx
from moto.core import DEFAULT_ACCOUNT_ID
from moto.server import ThreadedMotoServer
from moto.ses.models import ses_backends
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from drivers.fakes.sendgrid import ServerThread

REGION = "us-east-1"
ACCESS_KEY_ID = "testing"
SECRET_ACCESS_KEY = "testing"
VERIFIED_IDENTITIES = ("herald.local", "no-reply@herald.local")


@dataclass
class AwsFault:
    code: str
    status: int = 400
    message: str = ""
    count: int = 1
    latency_ms: int = 0
    path: str = ""  #: only requests whose path contains this


@dataclass
class _ProxyState:
    upstream: str
    faults: list[AwsFault] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def take(self, path: str) -> AwsFault | None:
        with self.lock:
            for fault in self.faults:
                if fault.path in path:
                    fault.count -= 1
                    if fault.count <= 0:
                        self.faults.remove(fault)
                    return fault
        return None


def _proxy_app(state: _ProxyState) -> Starlette:
    client = httpx.AsyncClient(base_url=state.upstream, timeout=30)

    async def forward(request: Request) -> Response:
        fault = state.take(request.url.path)
        if fault is not None:
            if fault.latency_ms:
                await asyncio.sleep(fault.latency_ms / 1000)
            if fault.status and fault.code:
                return JSONResponse(
                    {"message": fault.message or fault.code},
                    status_code=fault.status,
                    headers={"x-amzn-ErrorType": fault.code, "x-amzn-RequestId": "fault-0000"},
                )
        headers = {k: v for k, v in request.headers.items() if k.lower() not in ("host", "content-length")}
        upstream = await client.request(
            request.method, request.url.path, params=request.query_params, headers=headers, content=await request.body()
        )
        dropped = ("content-length", "transfer-encoding", "content-encoding", "connection")
        out = {k: v for k, v in upstream.headers.items() if k.lower() not in dropped}
        return Response(upstream.content, status_code=upstream.status_code, headers=out)

    methods = ["GET", "POST", "PUT", "DELETE", "HEAD", "PATCH"]
    return Starlette(routes=[Route("/{path:path}", forward, methods=methods)])


class AwsHandle:
    """``.url`` (the fault proxy), ``.moto_url``, ``.fail(...)``, ``.sent_ses()``, ``.env()``, ``.stop()``."""

    def __init__(self, *, proxy: bool = True) -> None:
        self.moto = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        self.moto.start()
        host, port = self.moto.get_host_and_port()
        self.moto_url = f"http://{host}:{port}"
        self._state = _ProxyState(self.moto_url)
        self._proxy = ServerThread(_proxy_app(self._state), "aws") if proxy else None
        self.url = self._proxy.url if self._proxy else self.moto_url
        self.verify(*VERIFIED_IDENTITIES)

    def client(self, service: str) -> Any:
        return boto3.client(
            service,
            region_name=REGION,
            endpoint_url=self.moto_url,
            aws_access_key_id=ACCESS_KEY_ID,
            aws_secret_access_key=SECRET_ACCESS_KEY,
        )

    def verify(self, *identities: str) -> None:
        ses = self.client("ses")
        for identity in identities:
            if "@" in identity:
                ses.verify_email_identity(EmailAddress=identity)
            else:
                ses.verify_domain_identity(Domain=identity)

    def fail(
        self, code: str, status: int = 400, message: str = "", *, count: int = 1, latency_ms: int = 0, path: str = ""
    ) -> None:
        """Answer the next ``count`` requests with this AWS error (``status=0``: only add latency)."""
        with self._state.lock:
            self._state.faults.append(AwsFault(code, status, message, count, latency_ms, path))

    def reset(self) -> None:
        with self._state.lock:
            self._state.faults.clear()

    def sent_ses(self) -> list[Any]:
        """The messages moto's SES accepted (``RawMessage`` / ``Message`` objects), oldest first."""
        return list(ses_backends[DEFAULT_ACCOUNT_ID][REGION].sent_messages)

    def env(self) -> dict[str, str]:
        return {
            "HERALD_SES_REGION": REGION,
            "HERALD_SES_ENDPOINT_URL": self.url,
            "HERALD_SES_FROM": "Herald <no-reply@herald.local>",
            "AWS_ACCESS_KEY_ID": ACCESS_KEY_ID,
            "AWS_SECRET_ACCESS_KEY": SECRET_ACCESS_KEY,
            "AWS_REGION": REGION,
        }

    def stop(self) -> None:
        if self._proxy is not None:
            self._proxy.stop()
        self.moto.stop()


def start_aws(*, proxy: bool = True) -> AwsHandle:
    return AwsHandle(proxy=proxy)
