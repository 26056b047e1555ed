"""Amazon SNS direct SMS (``Publish`` with ``PhoneNumber``) through aiobotocore.

Message attributes: ``AWS.SNS.SMS.SMSType`` (``Transactional`` by default, ``Promotional`` for marketing
traffic or ``extra["sms_type"]``), ``AWS.SNS.SMS.SenderID`` (alphanumeric sender, where supported) or
``AWS.MM.SMS.OriginationNumber`` (an E.164 sender), ``AWS.SNS.SMS.MaxPrice``. A 200 means accepted, not
delivered. Failures are classified by the AWS error code in :data:`SNS_ERRORS`; botocore's own retries
are off (one attempt), because the engine's retry policy owns retries. The health check is
``GetSMSAttributes`` (the account's SMS settings): it proves the credentials and the SNS permissions.

Settings: ``HERALD_SNS_REGION``, optional ``HERALD_SNS_ENDPOINT_URL`` (moto), ``HERALD_SNS_SMS_TYPE``,
``HERALD_SNS_SENDER_ID``, ``HERALD_SNS_ORIGINATION_NUMBER``, ``HERALD_SNS_MAX_PRICE``; credentials from
``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``/``AWS_SESSION_TOKEN`` when given, else the default chain.
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
from drivers.phone import SmsSendResult, scrub_numbers, sms_message
from drivers.toolkit import SettingsReader, classified
from engine.channels import Channel
from engine.delivery import OutboundMessage
from engine.errors import (
    BadRecipientError,
    DispatchError,
    PermanentError,
    ProviderDownError,
    RetryableError,
    ThrottledError,
)

if TYPE_CHECKING:
    from aiobotocore.session import AioSession

log = logging.getLogger(__name__)

#: AWS error code -> failure class (botocore's SNS model + the generic AWS auth/throttling codes).
SNS_ERRORS: dict[str, type[DispatchError]] = {
    "InvalidParameter": PermanentError,  # BadRecipient when it is about the phone number
    "ParameterValueInvalid": PermanentError,
    "ValidationException": PermanentError,
    "OptedOut": BadRecipientError,
    "EndpointDisabled": PermanentError,
    "NotFound": PermanentError,
    "Throttled": ThrottledError,
    "Throttling": ThrottledError,
    "ThrottlingException": ThrottledError,
    "TooManyRequestsException": ThrottledError,
    "KMSThrottling": ThrottledError,
    "InternalError": RetryableError,
    "InternalFailure": RetryableError,
    "ServiceUnavailable": RetryableError,
    "AuthorizationError": ProviderDownError,
    "InvalidClientTokenId": ProviderDownError,
    "UnrecognizedClientException": ProviderDownError,
    "SignatureDoesNotMatch": ProviderDownError,
    "AccessDenied": ProviderDownError,
    "AccessDeniedException": ProviderDownError,
    "ExpiredToken": ProviderDownError,
    "InvalidSecurity": ProviderDownError,
    "KMSDisabled": ProviderDownError,
    "KMSInvalidState": ProviderDownError,
    "KMSNotFound": ProviderDownError,
    "KMSAccessDenied": ProviderDownError,
    "KMSOptInRequired": ProviderDownError,
    "PlatformApplicationDisabled": ProviderDownError,
}

#: Default pause when SNS throttles (it sends no Retry-After).
THROTTLE_RETRY_AFTER_S = 5.0
SMS_TYPES = ("Transactional", "Promotional")
_SENDER_ID = re.compile(r"^(?=.*[A-Za-z])[A-Za-z0-9 ]{1,11}$")


def classify(err: ClientError) -> DispatchError:
    """Translate one AWS error answer."""
    code, status, message = error_parts(err)
    kind = SNS_ERRORS.get(code)
    if code == "InvalidParameter" and "phonenumber" in message.lower().replace(" ", ""):
        kind = BadRecipientError
    return classified(
        kind,
        provider="sns",
        status=status,
        detail=scrub_numbers(message),
        code=code,
        throttle_after_s=THROTTLE_RETRY_AFTER_S,
    )


@dataclass(frozen=True, slots=True)
class SnsSettings:
    aws: AwsEndpoint
    sms_type: str = "Transactional"
    sender_id: str | None = None
    origination_number: str | None = None
    max_price: str | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> SnsSettings:
        """Raises: ConfigurationError naming the variable that is missing or wrong."""
        read = SettingsReader(env)
        return cls(
            aws=AwsEndpoint.from_env(env, "SNS"),
            sms_type=read.choice("HERALD_SNS_SMS_TYPE", SMS_TYPES, "Transactional"),
            sender_id=read.optional("HERALD_SNS_SENDER_ID"),
            origination_number=read.optional("HERALD_SNS_ORIGINATION_NUMBER"),
            max_price=read.optional("HERALD_SNS_MAX_PRICE"),
        )


def _attr(value: str, data_type: str = "String") -> dict[str, str]:
    return {"DataType": data_type, "StringValue": value}


def message_attributes(message: OutboundMessage, settings: SnsSettings) -> dict[str, dict[str, str]]:
    """SNS's reserved SMS attributes for one message."""
    requested = message.extra.get("sms_type")
    if requested in SMS_TYPES:
        sms_type = str(requested)
    elif (message.category or "").lower() in ("marketing", "promotional", "promotion"):
        sms_type = "Promotional"
    else:
        sms_type = settings.sms_type
    attrs = {"AWS.SNS.SMS.SMSType": _attr(sms_type)}
    sender = message.sender or settings.sender_id or settings.origination_number
    if sender and sender.startswith("+"):
        attrs["AWS.MM.SMS.OriginationNumber"] = _attr(sender)
    elif sender and _SENDER_ID.match(sender):
        attrs["AWS.SNS.SMS.SenderID"] = _attr(sender)
    if settings.max_price:
        attrs["AWS.SNS.SMS.MaxPrice"] = _attr(settings.max_price, "Number")
    return attrs


class SnsDriver(BaseDriver):
    """SMS through Amazon SNS. One aiobotocore client per driver, opened on first use."""

    provider: ClassVar[str] = "sns"
    channel: ClassVar[Channel] = Channel.SMS

    def __init__(self, settings: SnsSettings, *, session: AioSession | None = None) -> None:
        self.settings = settings
        self._client = settings.aws.client("sns", session=session)

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Self:
        return cls(SnsSettings.from_env(env))

    async def send_one(self, message: OutboundMessage) -> SmsSendResult:
        phone, body, parts = sms_message(message, self.provider)
        doc = await self._publish(
            PhoneNumber=phone.e164, Message=body, MessageAttributes=message_attributes(message, self.settings)
        )
        log.debug("sns sms %s accepted: %s, %d segment(s)", message.message_id, parts.encoding, parts.segments)
        return SmsSendResult(
            message.message_id,
            self.provider,
            provider_message_id=str(doc.get("MessageId")),
            encoding=parts.encoding,
            segments=parts.segments,
            country=phone.region,
        )

    async def check_health(self) -> None:
        """``GetSMSAttributes``: the credentials are accepted and may use SNS's SMS settings; nothing is sent.

        Raises:
            DispatchError: ProviderDownError for refused credentials or permissions, or an unreachable
                endpoint; RetryableError for a 5xx or a timeout; ThrottledError when throttled.
        """
        client = await self._client.get()
        with aws_boundary(self.provider, classify):
            await client.get_sms_attributes(attributes=["DefaultSMSType"])

    async def _publish(self, **params: Any) -> dict[str, Any]:
        """The one boundary where AWS failures become Herald's classes."""
        client = await self._client.get()
        with aws_boundary(self.provider, classify):
            doc: dict[str, Any] = await client.publish(**params)
        return doc

    async def aclose(self) -> None:
        await self._client.aclose()
