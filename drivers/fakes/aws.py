"""moto (SES v2, SNS, S3) on a loopback port, behind a fault-injecting proxy built on the shared emulator.

The proxy records and forwards every request to moto unless a fault is scripted, in which case it answers
with an AWS error in the request's protocol: rest-json (``x-amzn-ErrorType`` header + ``{"message": ...}``)
for SES v2 and S3-style JSON APIs, the Query protocol's XML ``ErrorResponse`` for form-encoded requests
(SNS). The sender identities in :data:`VERIFIED_IDENTITIES` are verified in moto so sends from them
succeed; any other sender gets moto's ``MessageRejected``.
"""

from __future__ import annotations

import uuid
from typing import Any
from xml.sax.saxutils import escape

import boto3
import httpx
from moto.core import DEFAULT_ACCOUNT_ID
from moto.server import ThreadedMotoServer
from moto.ses.models import ses_backends
from moto.sns.models import sns_backends

from drivers.fakes.base import Answer, Emulator, Exchange, Fault, RunningEmulator, json_answer

REGION = "us-east-1"
ACCESS_KEY_ID = "testing"
SECRET_ACCESS_KEY = "testing"
VERIFIED_IDENTITIES = ("herald.local", "no-reply@herald.local")
_DROPPED = ("content-length", "transfer-encoding", "content-encoding", "connection")


def query_error(code: str, message: str, status: int) -> str:
    """An AWS Query-protocol (SNS) error document."""
    kind = "Server" if status >= 500 else "Sender"
    return (
        f'<ErrorResponse xmlns="http://sns.amazonaws.com/doc/2010-03-31/"><Error><Type>{kind}</Type>'
        f"<Code>{escape(code)}</Code><Message>{escape(message)}</Message></Error>"
        f"<RequestId>{uuid.uuid4()}</RequestId></ErrorResponse>"
    )


class AwsProxy(Emulator):
    """Forwards to moto; scripted faults are AWS errors (``body`` = ``{"code", "message"}``)."""

    name = "aws"

    def __init__(self, upstream: str) -> None:
        super().__init__()
        self.upstream = upstream
        self._client: httpx.AsyncClient | None = None  #: opened in the server's own event loop

    async def handle_async(self, request: Exchange) -> Answer:
        if self._client is None:
            self._client = httpx.AsyncClient(base_url=self.upstream, timeout=30)
        headers = {k: v for k, v in request.headers.items() if k not in ("host", "content-length")}
        url = f"{request.path}?{request.query}" if request.query else request.path
        upstream = await self._client.request(request.method, url, headers=headers, content=request.body)
        out = {k: v for k, v in upstream.headers.items() if k.lower() not in _DROPPED}
        return upstream.status_code, out, upstream.content

    def fault_answer(self, fault: Fault, request: Exchange) -> Answer:
        error = fault.body if isinstance(fault.body, dict) else {}
        code, message = str(error.get("code") or ""), str(error.get("message") or "")
        if not code:
            return fault.answer()
        if "form" in request.headers.get("content-type", ""):
            body = query_error(code, message or code, fault.status)
            return fault.status, {"content-type": "text/xml", **fault.headers}, body.encode()
        headers = {"x-amzn-ErrorType": code, "x-amzn-RequestId": "fault-0000", **fault.headers}
        return json_answer(fault.status, {"message": message or code}, headers)


class AwsHandle:
    """``.url`` (the fault proxy), ``.moto_url``, ``.proxy`` (the emulator), ``.fail(...)``, ``.sent_ses()``,
    ``.sent_sms()``, ``.env()``, ``.stop()``."""

    def __init__(self) -> None:
        self.moto = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        self.moto.start()
        host, port = self.moto.get_host_and_port()
        self.moto_url = f"http://{host}:{port}"
        self.proxy = AwsProxy(self.moto_url)
        try:
            self._server = RunningEmulator(self.proxy)
        except BaseException:
            self.moto.stop()
            raise
        self.url = self._server.url
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
        self,
        code: str,
        status: int = 400,
        message: str = "",
        *,
        count: int = 1,
        after: int = 0,
        latency_ms: int = 0,
        outage: bool = False,
        path: str = "",
    ) -> None:
        """Answer the next ``count`` requests (after ``after`` of them) with this AWS error; ``status=0``
        only adds latency."""
        body = {"code": code, "message": message}
        self.proxy.fail(status, body, count=count, after=after, latency_ms=latency_ms, outage=outage, path=path)

    def reset(self) -> None:
        self.proxy.reset()

    def sent_ses(self) -> list[Any]:
        """The messages moto's SES accepted (``RawMessage`` / ``Message`` objects), oldest first."""
        return list(ses_backends[DEFAULT_ACCOUNT_ID][REGION].sent_messages)

    def sent_sms(self) -> dict[str, tuple[str, str]]:
        """The SMS moto's SNS accepted: message id -> (number, text)."""
        return dict(sns_backends[DEFAULT_ACCOUNT_ID][REGION].sms_messages)

    def env(self) -> dict[str, str]:
        """The settings that point the SES and SNS drivers (and the S3 attachment fetcher) at the proxy."""
        return {
            "HERALD_SES_REGION": REGION,
            "HERALD_SES_ENDPOINT_URL": self.url,
            "HERALD_SES_FROM": "Herald <no-reply@herald.local>",
            "HERALD_SNS_REGION": REGION,
            "HERALD_SNS_ENDPOINT_URL": self.url,
            "HERALD_S3_ENDPOINT_URL": self.moto_url,
            "HERALD_S3_REGION": REGION,
            "AWS_ACCESS_KEY_ID": ACCESS_KEY_ID,
            "AWS_SECRET_ACCESS_KEY": SECRET_ACCESS_KEY,
            "AWS_REGION": REGION,
        }

    def stop(self) -> None:
        self._server.stop()
        self.moto.stop()


def start_aws() -> AwsHandle:
    return AwsHandle()
