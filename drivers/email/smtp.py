"""SMTP submission through aiosmtplib, with optional DKIM signing (dkimpy).

One connection per message (batches are bounded by :attr:`SmtpDriver.concurrency`). The provider message
id is the ``Message-ID`` header the driver writes. Replies are classified by code in :data:`SMTP_CODES`:
a refused recipient (550/551/553 at ``RCPT``) is a bad recipient, 4xx is transient, 535 (auth) and an
unreachable server are provider-wide. The health check connects and logs in as a send does, then sends
``NOOP`` and ``QUIT``.

Settings: ``HERALD_SMTP_HOST`` (required), ``HERALD_SMTP_PORT`` (587; 465 means implicit TLS),
``HERALD_SMTP_USERNAME``/``HERALD_SMTP_PASSWORD``, ``HERALD_SMTP_STARTTLS`` (``true``/``false``; unset:
upgrade when offered), ``HERALD_SMTP_FROM`` (else ``HERALD_EMAIL_FROM``), ``HERALD_SMTP_TIMEOUT_S``; DKIM with
``HERALD_DKIM_PRIVATE_KEY_FILE`` + ``HERALD_DKIM_SELECTOR`` + ``HERALD_DKIM_DOMAIN``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from email.utils import parseaddr
from pathlib import Path
from typing import Any, ClassVar, Self

import aiosmtplib
import dkim
import dkim.crypto

from drivers.base import BaseDriver
from drivers.email._mime import build_mime, default_sender, recipient
from drivers.toolkit import SettingsReader, TransportErrors, classified
from engine.channels import Channel
from engine.delivery import OutboundMessage, SendResult
from engine.errors import (
    BadRecipientError,
    ConfigurationError,
    DispatchError,
    PermanentError,
    ProviderDownError,
    RetryableError,
)

log = logging.getLogger(__name__)

#: SMTP reply code -> failure class (recipient codes only count as bad recipient at ``RCPT``).
SMTP_CODES: dict[int, type[DispatchError]] = {
    421: RetryableError,
    450: RetryableError,
    451: RetryableError,
    452: RetryableError,
    530: ProviderDownError,  # authentication required
    534: ProviderDownError,
    535: ProviderDownError,  # authentication failed
    550: BadRecipientError,
    551: BadRecipientError,
    553: BadRecipientError,
}
#: aiosmtplib: no connection (refused, DNS) or a connect timeout sent nothing; a later timeout or a
#: dropped connection may have come after the message was handed over.
SMTP_ERRORS = TransportErrors(
    unreachable=(aiosmtplib.SMTPConnectError, aiosmtplib.SMTPConnectTimeoutError),
    timed_out=(aiosmtplib.SMTPTimeoutError,),
    broken=(aiosmtplib.SMTPServerDisconnected,),
)
#: Headers signed by DKIM when present.
DKIM_HEADERS = (
    b"From",
    b"To",
    b"Subject",
    b"Date",
    b"Message-ID",
    b"MIME-Version",
    b"Content-Type",
    b"List-Unsubscribe",
    b"List-Unsubscribe-Post",
)


@dataclass(frozen=True, slots=True)
class DkimSettings:
    selector: str
    domain: str
    private_key: bytes = field(repr=False)

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> DkimSettings | None:
        names = ("HERALD_DKIM_PRIVATE_KEY_FILE", "HERALD_DKIM_SELECTOR", "HERALD_DKIM_DOMAIN")
        values = [env.get(n) or "" for n in names]
        if not any(values):
            return None
        missing = [n for n, v in zip(names, values, strict=True) if not v]
        if missing:
            raise ConfigurationError(f"DKIM signing needs {', '.join(missing)} as well")
        try:
            key = Path(values[0]).expanduser().read_bytes()
        except OSError as err:
            raise ConfigurationError(f"HERALD_DKIM_PRIVATE_KEY_FILE cannot be read ({err.strerror})") from err
        try:
            dkim.crypto.parse_pem_private_key(key)
        except dkim.crypto.UnparsableKeyError as err:
            raise ConfigurationError("HERALD_DKIM_PRIVATE_KEY_FILE is not a PEM RSA private key") from err
        return cls(selector=values[1], domain=values[2], private_key=key)

    def sign(self, data: bytes) -> bytes:
        header: bytes = dkim.sign(
            data,
            self.selector.encode(),
            self.domain.encode(),
            self.private_key,
            include_headers=[h for h in DKIM_HEADERS if _has_header(data, h)],
        )
        return header + data


def _has_header(data: bytes, name: bytes) -> bool:
    head = data.split(b"\r\n\r\n", 1)[0].lower()
    return head.startswith(name.lower() + b":") or b"\n" + name.lower() + b":" in head


@dataclass(frozen=True, slots=True)
class SmtpSettings:
    host: str
    sender: str
    port: int = 587
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    starttls: bool | None = None
    timeout_s: float = 30.0
    dkim: DkimSettings | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> SmtpSettings:
        """Raises: ConfigurationError naming the variable that is missing or wrong."""
        read = SettingsReader(env)
        username, password = read.optional("HERALD_SMTP_USERNAME"), read.optional("HERALD_SMTP_PASSWORD")
        if bool(username) != bool(password):
            raise ConfigurationError("HERALD_SMTP_USERNAME and HERALD_SMTP_PASSWORD go together")
        return cls(
            host=read.required("HERALD_SMTP_HOST"),
            sender=default_sender(env, "HERALD_SMTP_FROM"),
            port=read.integer("HERALD_SMTP_PORT", 587),
            username=username,
            password=password,
            starttls=read.flag("HERALD_SMTP_STARTTLS"),
            timeout_s=read.number("HERALD_SMTP_TIMEOUT_S", 30.0),
            dkim=DkimSettings.from_env(env),
        )


def classify(code: int, text: str, *, stage: str) -> DispatchError:
    """Translate one SMTP error reply; ``stage`` is ``RCPT`` for recipient refusals, ``NOOP`` for the health
    check's."""
    kind = SMTP_CODES.get(code)
    if kind is None:
        kind = RetryableError if 400 <= code < 500 else ProviderDownError if code <= 0 else PermanentError
    if kind is BadRecipientError and stage != "RCPT":
        kind = PermanentError
    if stage == "NOOP" and code >= 500:  # a refusal that concerns no message: the server takes none
        kind = ProviderDownError
    return classified(kind, provider="smtp", status=code, detail=text)


class SmtpDriver(BaseDriver):
    """Email over SMTP submission."""

    provider: ClassVar[str] = "smtp"
    channel: ClassVar[Channel] = Channel.EMAIL
    concurrency: ClassVar[int] = 8

    def __init__(self, settings: SmtpSettings) -> None:
        self.settings = settings

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Self:
        return cls(SmtpSettings.from_env(env))

    async def send_one(self, message: OutboundMessage) -> SendResult:
        email = recipient(message, self.provider)
        sender = message.sender or self.settings.sender
        mime = build_mime(message, sender, provider=self.provider)
        data = mime.as_bytes()
        if self.settings.dkim is not None:
            data = self.settings.dkim.sign(data)
        await self._submit(parseaddr(sender)[1], email, data)
        log.debug("smtp email %s accepted", message.message_id)
        return SendResult(
            message.message_id,
            self.provider,
            provider_message_id=str(mime["Message-ID"]).strip("<>"),
            cost_usd=0.0,
        )

    async def check_health(self) -> None:
        """Connect as a send does (TLS, ``AUTH``), then ``EHLO``, ``NOOP`` and ``QUIT``: nothing is sent.

        Raises:
            DispatchError: ProviderDownError for a refused connection, refused credentials or a 5xx reply;
                RetryableError for a 4xx one (``421``: the server is busy) or a timeout.
        """
        with self._boundary("NOOP"):
            async with aiosmtplib.SMTP(**self._connection()) as client:
                await client.noop()  # preceded by EHLO unless connecting (STARTTLS, AUTH) sent it

    async def _submit(self, mail_from: str, rcpt: str, data: bytes) -> None:
        with self._boundary("DATA"):
            await aiosmtplib.send(data, sender=mail_from, recipients=[rcpt], **self._connection())

    def _connection(self) -> dict[str, Any]:
        """aiosmtplib's connection options: implicit TLS on 465, else STARTTLS as configured; AUTH when set."""
        s = self.settings
        kw: dict[str, Any] = {"hostname": s.host, "port": s.port, "timeout": s.timeout_s, "use_tls": s.port == 465}
        if s.port != 465:
            kw["start_tls"] = s.starttls
        if s.username:
            kw |= {"username": s.username, "password": s.password}
        return kw

    @contextmanager
    def _boundary(self, stage: str) -> Iterator[None]:
        """The one boundary where SMTP failures become Herald's classes; ``stage`` names the command whose
        error reply is classified (a refused recipient is always ``RCPT``)."""
        try:
            with SMTP_ERRORS.boundary(self.provider):
                yield
        except aiosmtplib.SMTPRecipientsRefused as err:
            first = err.recipients[0]
            raise classify(first.code, first.message, stage="RCPT") from err
        except aiosmtplib.SMTPAuthenticationError as err:
            raise ProviderDownError(
                "SMTP authentication failed", provider=self.provider, code=str(err.code), status_code=err.code
            ) from err
        except aiosmtplib.SMTPResponseException as err:
            raise classify(err.code, err.message, stage=stage) from err
        except aiosmtplib.SMTPNotSupported as err:  # the server lacks what our settings ask for (AUTH, TLS)
            raise classified(
                ProviderDownError, provider=self.provider, status=None, detail=str(err), code="not_supported"
            ) from err
        except aiosmtplib.SMTPException as err:
            raise classified(PermanentError, provider=self.provider, status=None, detail=str(err), code="smtp") from err
