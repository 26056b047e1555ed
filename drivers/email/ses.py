"""Amazon SES v2 ``SendEmail`` through aiobotocore.

``Simple`` content when the message has no attachments and no custom headers, ``Raw`` MIME (built by
:mod:`drivers.email._mime`) otherwise. The Herald message id travels as the ``EmailTags`` entry
``herald_message_id``. botocore's own retries are off: the engine's retry policy owns retries.

Settings: ``HERALD_SES_REGION`` (else ``AWS_REGION``), optional ``HERALD_SES_ENDPOINT_URL`` (moto),
``HERALD_SES_FROM`` (else ``HERALD_EMAIL_FROM``), ``HERALD_SES_CONFIGURATION_SET``, ``HERALD_SES_TIMEOUT_S``;
credentials ``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``/``AWS_SESSION_TOKEN`` when given, else the
default chain.

Health check: ``GetAccount`` (``GET /v2/email/account``): the account must have sending enabled and not be
shut down.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Self

from botocore.exceptions import ClientError

from drivers.aws_client import AwsEndpoint, aws_boundary, error_parts
from drivers.base import BaseDriver
from drivers.email._mime import build_mime, default_sender, recipient
from drivers.toolkit import SettingsReader, classified
from engine.channels import Channel
from engine.delivery import OutboundMessage, SendResult
from engine.errors import DispatchError, PermanentError, ProviderDownError, RetryableError, ThrottledError

if TYPE_CHECKING:
    from aiobotocore.session import AioSession

log = logging.getLogger(__name__)

#: AWS error code -> failure class. The one place SES answers are classified.
SES_ERRORS: dict[str, type[DispatchError]] = {
    "Throttling": ThrottledError,
    "ThrottlingException": ThrottledError,
    "TooManyRequestsException": ThrottledError,
    "MessageRejected": PermanentError,
    "BadRequestException": PermanentError,
    "NotFoundException": PermanentError,
    "ConfigurationSetDoesNotExist": PermanentError,
    "LimitExceededException": PermanentError,
    "AccountSendingPausedException": ProviderDownError,
    "SendingPausedException": ProviderDownError,
    "ConfigurationSetSendingPausedException": ProviderDownError,
    "AccountSuspendedException": ProviderDownError,
    "MailFromDomainNotVerified": ProviderDownError,
    "MailFromDomainNotVerifiedException": ProviderDownError,
    "AccessDenied": ProviderDownError,
    "AccessDeniedException": ProviderDownError,
    "InvalidClientTokenId": ProviderDownError,
    "UnrecognizedClientException": ProviderDownError,
    "SignatureDoesNotMatch": ProviderDownError,
    "ExpiredToken": ProviderDownError,
    "ServiceUnavailable": RetryableError,
    "InternalFailure": RetryableError,
    "InternalError": RetryableError,
    "RequestTimeout": RetryableError,
    "PriorRequestNotComplete": RetryableError,
}
#: SES sends no Retry-After; pause this long when throttled.
THROTTLE_RETRY_AFTER_S = 1.0
_TAG_VALUE = re.compile(r"[^A-Za-z0-9_-]")


def classify(err: ClientError) -> DispatchError:
    """Translate one AWS error answer."""
    code, status, message = error_parts(err)
    kind = SES_ERRORS.get(code)
    if kind is ThrottledError and "daily" in message.lower():
        kind = ProviderDownError  # "Daily message quota exceeded": nothing goes until the window rolls
    return classified(
        kind, provider="ses", status=status, detail=message, code=code, throttle_after_s=THROTTLE_RETRY_AFTER_S
    )


@dataclass(frozen=True, slots=True)
class SesSettings:
    aws: AwsEndpoint
    sender: str
    configuration_set: str | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> SesSettings:
        """Raises: ConfigurationError naming the variable that is missing or malformed."""
        return cls(
            aws=AwsEndpoint.from_env(env, "SES", also=("AWS_REGION",)),
            sender=default_sender(env, "HERALD_SES_FROM"),
            configuration_set=SettingsReader(env).optional("HERALD_SES_CONFIGURATION_SET"),
        )


def _text(value: str) -> dict[str, str]:
    return {"Data": value, "Charset": "UTF-8"}


def email_content(message: OutboundMessage, sender: str) -> tuple[dict[str, Any], int]:
    """SES ``Content`` for one message and the size in bytes of its attachments."""
    if message.attachments or message.headers:
        raw = build_mime(message, sender, provider="ses").as_bytes()
        attached = sum(len(a.data or b"") for a in message.attachments)
        return {"Raw": {"Data": raw}}, attached
    content = message.content
    if not (content.text or content.html):
        raise PermanentError("email has neither text nor html", provider="ses", code="empty_body")
    body = {k: _text(v) for k, v in (("Text", content.text), ("Html", content.html)) if v}
    return {"Simple": {"Subject": _text(content.subject or ""), "Body": body}}, 0


class SesDriver(BaseDriver):
    """Email through Amazon SES v2. One aiobotocore client per driver, opened on first use."""

    provider: ClassVar[str] = "ses"
    channel: ClassVar[Channel] = Channel.EMAIL

    def __init__(self, settings: SesSettings, *, session: AioSession | None = None) -> None:
        self.settings = settings
        self._client = settings.aws.client("sesv2", session=session)

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Self:
        return cls(SesSettings.from_env(env))

    async def send_one(self, message: OutboundMessage) -> SendResult:
        email = recipient(message, self.provider)
        sender = message.sender or self.settings.sender
        content, _attached = email_content(message, sender)
        params: dict[str, Any] = {
            "FromEmailAddress": sender,
            "Destination": {"ToAddresses": [email]},
            "Content": content,
            "EmailTags": [{"Name": "herald_message_id", "Value": _TAG_VALUE.sub("_", message.message_id)[:256]}],
        }
        if self.settings.configuration_set:
            params["ConfigurationSetName"] = self.settings.configuration_set
        doc = await self._send(params)
        log.debug("ses email %s accepted (%s)", message.message_id, "raw" if "Raw" in content else "simple")
        return SendResult(message.message_id, self.provider, provider_message_id=str(doc["MessageId"]))

    async def check_health(self) -> None:
        """Raises: DispatchError (ProviderDownError when the account's sending is paused or shut down)."""
        client = await self._client.get()
        with aws_boundary(self.provider, classify):
            doc: dict[str, Any] = await client.get_account()
        if not doc.get("SendingEnabled", False) or doc.get("EnforcementStatus") == "SHUTDOWN":
            raise ProviderDownError(
                f"SES sending is paused (enforcement status {doc.get('EnforcementStatus', 'unknown')})",
                provider=self.provider,
                code="SendingPausedException",
            )

    async def _send(self, params: dict[str, Any]) -> dict[str, Any]:
        """The one boundary where AWS failures become Herald's classes."""
        client = await self._client.get()
        with aws_boundary(self.provider, classify):
            doc: dict[str, Any] = await client.send_email(**params)
        return doc

    async def aclose(self) -> None:
        await self._client.aclose()
