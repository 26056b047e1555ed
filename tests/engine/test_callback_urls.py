"""Callback URL safety: the admission check, the message model's 422, and the connect-time check
against DNS rebinding (with a stub resolver and a real local server)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from ipaddress import ip_address

import httpx
import pytest
from pydantic import ValidationError

from engine.feedback.callback_urls import (
    GuardedTransport,
    UnsafeCallbackUrl,
    check_callback_url,
    resolve_safe,
)
from engine.intake import Intake
from engine.metrics import MetricsBuffer
from engine.models import ALLOW_PRIVATE_CALLBACKS, CallbackPolicy, NotificationRequest
from engine.problems import ApiProblem, from_pydantic
from engine.settings import load_settings

REFUSED = [
    "http://hooks.example.com/events",  # plain http
    "http://169.254.169.254/latest",
    "https://169.254.169.254/latest/meta-data/",  # AWS/GCP/Azure metadata
    "https://[fd00:ec2::254]/latest",  # AWS metadata over IPv6
    "https://0xA9FEA9FE/",  # hex form of 169.254.169.254
    "https://2852039166/",  # decimal form
    "https://0251.0376.0251.0376/",  # octal form
    "https://[::ffff:169.254.169.254]/",  # IPv4-mapped IPv6
    "https://[::ffff:127.0.0.1]/",
    "https://[::ffff:a9fe:a9fe]:8443/",
    "https://[64:ff9b::a9fe:a9fe]/",  # NAT64
    "https://[2002:a9fe:a9fe::1]/",  # 6to4
    "https://[::a9fe:a9fe]/",  # IPv4-compatible
    "https://127.0.0.1/",
    "https://127.1/",
    "https://[::1]/",
    "https://0.0.0.0/",
    "https://10.0.0.5/",
    "https://172.16.3.4/",
    "https://192.168.1.1:8443/",
    "https://100.64.0.1/",  # CGNAT
    "https://169.254.10.1/",  # link-local
    "https://[fe80::1]/",
    "https://[fc00::1]/",
    "https://224.0.0.1/",
    "https://[ff02::1]/",
    "https://255.255.255.255/",
    "https://198.18.0.1/",
    "https://localhost/",
    "https://api.localhost/",
    "https://metadata.google.internal/computeMetadata/v1/",
    "https://db.internal/",
    "https://printer.local/",
    "https://intranet/",  # single label: resolved through search domains
    "https://user:secret@hooks.example.com/",
    "ftp://hooks.example.com/",
    "not a url",
]
ACCEPTED = [
    "https://hooks.example.com/events",
    "https://api.prepeet.ai/internal/notify/events",
    "https://hooks.example.com:8443/x?y=1",
    "https://8.8.8.8/hook",
    "https://[2001:4860:4860::8888]/hook",
]


@pytest.mark.parametrize("url", REFUSED)
def test_admission_refuses(url: str) -> None:
    with pytest.raises(UnsafeCallbackUrl):
        check_callback_url(url)


@pytest.mark.parametrize("url", ACCEPTED)
def test_admission_accepts_public_https(url: str) -> None:
    assert check_callback_url(url).startswith("https://")


@pytest.mark.parametrize("url", ["http://127.0.0.1:9000/hook", "http://localhost/x", "https://10.0.0.5/"])
def test_allow_private_lifts_both_rules(url: str) -> None:
    assert check_callback_url(url, allow_private=True)


def test_allow_private_still_wants_http() -> None:
    with pytest.raises(UnsafeCallbackUrl):
        check_callback_url("ftp://127.0.0.1/", allow_private=True)


BODY = {"channel": "email", "template_id": "otp_login", "to": {"email": "ada@example.com"}}


def test_the_message_model_answers_422_naming_callback_url() -> None:
    with pytest.raises(ValidationError) as caught:
        NotificationRequest.model_validate({**BODY, "callback_url": "http://169.254.169.254/latest"})
    errors = from_pydantic(caught.value.errors(include_url=False))
    assert [e.loc for e in errors] == [("body", "callback_url")]
    assert errors[0].type == "unsafe_callback_url"
    assert "https" in errors[0].msg

    with pytest.raises(ValidationError) as caught:
        NotificationRequest.model_validate({**BODY, "callback_url": "https://169.254.169.254/latest"})
    assert "169.254.169.254" in caught.value.errors()[0]["msg"]


def test_the_message_model_accepts_public_and_private_when_allowed() -> None:
    ok = NotificationRequest.model_validate({**BODY, "callback_url": "https://hooks.example.com/e"})
    assert str(ok.callback_url) == "https://hooks.example.com/e"
    dev = NotificationRequest.model_validate(
        {**BODY, "callback_url": "http://127.0.0.1:9000/e"}, context={ALLOW_PRIVATE_CALLBACKS: True}
    )
    assert str(dev.callback_url) == "http://127.0.0.1:9000/e"


def test_the_process_default_decides_validation_without_a_context() -> None:
    """The API edge validates bodies without a context: the serving process's setting decides there."""
    body = {**BODY, "callback_url": "http://127.0.0.1:9000/e"}
    CallbackPolicy.set_default(True)
    try:
        assert str(NotificationRequest.model_validate(body).callback_url) == "http://127.0.0.1:9000/e"
        with pytest.raises(ValidationError):  # an explicit context still wins
            NotificationRequest.model_validate(body, context={ALLOW_PRIVATE_CALLBACKS: False})
    finally:
        CallbackPolicy.set_default(False)
    with pytest.raises(ValidationError):
        NotificationRequest.model_validate(body)


@pytest.mark.parametrize("allow", [False, True])
def test_intake_validates_with_its_allow_private_flag(allow: bool) -> None:
    intake = Intake(None, None, metrics=MetricsBuffer(), idempotency_ttl_s=60, allow_private_callbacks=allow)  # type: ignore[arg-type]
    body = {**BODY, "callback_url": "http://127.0.0.1:9000/e"}
    if allow:
        assert str(intake.parse(body).callback_url) == "http://127.0.0.1:9000/e"
    else:
        with pytest.raises(ApiProblem) as caught:
            intake.parse(body)
        assert caught.value.status == 422
        assert [e.loc for e in caught.value.errors] == [("body", "callback_url")]


def test_setting_defaults_to_off() -> None:
    assert load_settings({}).webhooks_allow_private is False
    assert load_settings({"HERALD_WEBHOOKS_ALLOW_PRIVATE": "true"}).webhooks_allow_private is True


class StubResolver:
    """Answers from a table, each call taking the next answer (a rebinding name changes its mind)."""

    def __init__(self, answers: dict[str, list[list[str]]]) -> None:
        self.answers = answers
        self.calls: list[str] = []

    async def __call__(self, host: str, port: int) -> Sequence[str]:
        self.calls.append(host)
        queue = self.answers[host]
        return queue.pop(0) if len(queue) > 1 else queue[0]


async def test_connect_time_check_catches_dns_rebinding() -> None:
    resolver = StubResolver({"hooks.example.com": [["93.184.216.34"], ["127.0.0.1"]]})
    check_callback_url("https://hooks.example.com/e")  # admitted: the name looks public
    assert await resolve_safe("hooks.example.com", 443, resolver=resolver) == [ip_address("93.184.216.34")]
    with pytest.raises(UnsafeCallbackUrl, match=r"127\.0\.0\.1"):
        await resolve_safe("hooks.example.com", 443, resolver=resolver)


@pytest.mark.parametrize(
    "answer",
    [["93.184.216.34", "10.0.0.5"], ["::ffff:169.254.169.254"], ["fd00:ec2::254"], ["100.64.0.9"], []],
)
async def test_any_private_answer_refuses_the_host(answer: list[str]) -> None:
    with pytest.raises(UnsafeCallbackUrl):
        await resolve_safe("mixed.example.com", 443, resolver=StubResolver({"mixed.example.com": [answer]}))


async def test_resolver_failures_are_refusals() -> None:
    async def broken(host: str, port: int) -> Sequence[str]:
        raise OSError(-2, "Name or service not known")

    with pytest.raises(UnsafeCallbackUrl, match="does not resolve"):
        await resolve_safe("nowhere.example.com", 443, resolver=broken)


@pytest.fixture
async def local_server() -> AsyncIterator[int]:
    """A plain HTTP server on 127.0.0.1 answering 204 to anything."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    yield server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()


async def test_guarded_transport_connects_to_the_checked_address(local_server: int) -> None:
    resolver = StubResolver({"receiver.test": [["127.0.0.1"]]})
    transport = GuardedTransport(resolver=resolver, allow_private=True)
    async with httpx.AsyncClient(transport=transport, trust_env=False) as client:
        response = await client.post(f"http://receiver.test:{local_server}/hook", content=b"{}")
    assert response.status_code == 204
    assert resolver.calls == ["receiver.test"]


async def test_guarded_transport_refuses_a_private_address_before_connecting(local_server: int) -> None:
    resolver = StubResolver({"receiver.example.com": [["127.0.0.1"]]})
    async with httpx.AsyncClient(transport=GuardedTransport(resolver=resolver), trust_env=False) as client:
        with pytest.raises(httpx.ConnectError, match=r"127\.0\.0\.1"):
            await client.post(f"http://receiver.example.com:{local_server}/hook", content=b"{}")
        with pytest.raises(httpx.ConnectError, match="private"):
            await client.post(f"http://127.0.0.1:{local_server}/hook", content=b"{}")
