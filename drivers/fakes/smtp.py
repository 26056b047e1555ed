"""SMTP emulator: an aiosmtpd server on a loopback port recording what it accepts.

Optional AUTH (PLAIN/LOGIN without TLS, loopback only), scripted refusals per recipient, faults per stage
(``MAIL``/``RCPT``/``DATA``, and ``NOOP``: the SMTP driver's health check) on the shared
:class:`~drivers.fakes.base.FaultPlan` (the reply code is the fault's ``status``, its text the ``body``),
and DKIM verification with dkimpy against a public key the emulator serves as its own "DNS". Each accepted
message is a :class:`ReceivedMail`.
"""

from __future__ import annotations

import asyncio
import base64
import email
import email.policy
import logging
import socket
import threading
import warnings
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import dkim
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from drivers.fakes.base import Fault, FaultPlan

USERNAME = "herald"
PASSWORD = "emulator-smtp-password-0001"
DKIM_SELECTOR = "herald"
DKIM_DOMAIN = "herald.local"


@dataclass
class ReceivedMail:
    mail_from: str
    rcpt_tos: list[str]
    data: bytes
    message: EmailMessage
    dkim_signed: bool
    dkim_valid: bool | None  #: None when unsigned


def make_dkim_key(directory: Path) -> tuple[Path, bytes]:
    """Write a fresh RSA private key (PEM) and return its path and the DNS TXT record of its public key."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()
    )
    path = directory / "dkim.pem"
    path.write_bytes(pem)
    path.chmod(0o600)
    der = key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return path, b"v=DKIM1; k=rsa; p=" + base64.b64encode(der)


@dataclass
class SmtpState:
    username: str | None = USERNAME
    password: str | None = PASSWORD
    dkim_txt: bytes | None = None  #: served for ``{selector}._domainkey.{domain}``
    messages: list[ReceivedMail] = field(default_factory=list)
    refused: dict[str, str] = field(default_factory=dict)  #: address -> SMTP reply
    plan: FaultPlan = field(default_factory=FaultPlan)
    lock: threading.Lock = field(default_factory=threading.Lock)
    transactions: int = 0  #: ``MAIL`` commands seen, answered or faulted
    noops: int = 0  #: ``NOOP`` commands seen, answered or faulted

    async def fault_for(self, stage: str) -> str | None:
        """The reply a scripted fault gives at ``stage`` (after its latency), if any."""
        fault = self.plan.take(stage)
        if fault is None:
            return None
        if fault.latency_ms:
            await asyncio.sleep(fault.latency_ms / 1000)
        return f"{fault.status} {fault.body or ''}".strip() if fault.status else None


class RecordingHandler:
    def __init__(self, state: SmtpState) -> None:
        self.state = state

    async def handle_MAIL(self, server: Any, session: Any, envelope: Any, address: str, options: list[str]) -> str:
        with self.state.lock:
            self.state.transactions += 1
        reply = await self.state.fault_for("MAIL")
        if reply:
            return reply
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return "250 OK"

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str, options: list[str]) -> str:
        reply = await self.state.fault_for("RCPT") or self.state.refused.get(address.lower())
        if reply:
            return reply
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        reply = await self.state.fault_for("DATA")
        if reply:
            return reply
        data: bytes = envelope.original_content or envelope.content
        parsed = email.message_from_bytes(data, policy=email.policy.default)
        signed = parsed.get("DKIM-Signature") is not None
        valid = dkim.verify(data, dnsfunc=self._dns) if signed else None
        mail = ReceivedMail(envelope.mail_from, list(envelope.rcpt_tos), data, parsed, signed, valid)  # type: ignore[arg-type]
        with self.state.lock:
            self.state.messages.append(mail)
        return "250 2.0.0 Ok: queued"

    async def handle_NOOP(self, server: Any, session: Any, envelope: Any, arg: str) -> str:
        with self.state.lock:
            self.state.noops += 1
        return await self.state.fault_for("NOOP") or "250 OK"

    def _dns(self, name: bytes | str, timeout: int = 5) -> bytes | None:
        return self.state.dkim_txt


class _QuietController(Controller):
    """AUTH without TLS is what a loopback emulator wants; aiosmtpd warns about it on every connection."""

    def factory(self) -> Any:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Requiring AUTH while not requiring TLS")
            return super().factory()


class SmtpHandle:
    """A running SMTP emulator: ``.host``, ``.port``, ``.messages``, ``.refuse()``, ``.fail()``, ``.stop()``."""

    def __init__(self, state: SmtpState) -> None:
        # aiosmtpd logs each command at INFO and each line of DATA (the message, its codes) at DEBUG, and
        # warns on every connection about AUTH without TLS, which a loopback emulator means to allow
        logging.getLogger("mail.log").setLevel(logging.ERROR)
        self.state = state
        self.host = "127.0.0.1"
        with socket.socket() as sock:
            sock.bind((self.host, 0))
            self.port = int(sock.getsockname()[1])
        auth: dict[str, Any] = {}
        if state.username is not None:
            auth = {"authenticator": self._authenticate, "auth_require_tls": False, "auth_required": True}
        self.controller = _QuietController(RecordingHandler(state), hostname=self.host, port=self.port, **auth)
        self.controller.start()

    def _authenticate(self, server: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> AuthResult:
        ok = isinstance(data, LoginPassword) and (data.login.decode(), data.password.decode()) == (
            self.state.username,
            self.state.password,
        )
        return AuthResult(success=ok, handled=False)

    @property
    def messages(self) -> list[ReceivedMail]:
        with self.state.lock:
            return list(self.state.messages)

    def refuse(self, address: str, reply: str = "550 5.1.1 No such user") -> None:
        with self.state.lock:
            self.state.refused[address.lower()] = reply

    def fail(
        self, stage: str, reply: str, *, count: int = 1, after: int = 0, latency_ms: int = 0, outage: bool = False
    ) -> None:
        """Answer ``stage`` (``MAIL``/``RCPT``/``DATA``/``NOOP``) with ``reply`` (``"451 4.3.0 Try again
        later"``; an empty reply only adds the latency)."""
        code, _, text = reply.partition(" ")
        fault = Fault(int(code or 0), text, count=count, latency_ms=latency_ms, outage=outage, after=after)
        fault.path = stage.upper()  # the stage plays the part of the path
        self.state.plan.add(fault)

    @property
    def transactions(self) -> int:
        """Mail transactions begun (``MAIL`` commands), whatever their outcome."""
        with self.state.lock:
            return self.state.transactions

    @property
    def noops(self) -> int:
        """``NOOP`` commands seen (the SMTP driver's health checks)."""
        with self.state.lock:
            return self.state.noops

    def reset(self) -> None:
        self.state.plan.clear()
        with self.state.lock:
            self.state.messages.clear()
            self.state.refused.clear()
            self.state.transactions = 0
            self.state.noops = 0

    def env(self) -> dict[str, str]:
        env = {"HERALD_SMTP_HOST": self.host, "HERALD_SMTP_PORT": str(self.port), "HERALD_SMTP_STARTTLS": "false"}
        if self.state.username is not None:
            env |= {"HERALD_SMTP_USERNAME": self.state.username, "HERALD_SMTP_PASSWORD": self.state.password or ""}
        return env

    def stop(self) -> None:
        self.controller.stop()


def start_smtp(*, dkim_txt: bytes | None = None, username: str | None = USERNAME) -> SmtpHandle:
    """Start the emulator; ``dkim_txt`` is the public-key record used to verify DKIM signatures."""
    return SmtpHandle(SmtpState(username=username, password=PASSWORD if username else None, dkim_txt=dkim_txt))
