"""Provider webhook receivers: each checks a request by its provider's own scheme, then parses it.

One receiver per ``(channel, provider)`` that reports deliveries, built from provider settings like a
driver (:func:`create_receiver`; the composition root hands it to the engine's
:class:`~engine.feedback.inbound.ProviderWebhooks`). :meth:`WebhookReceiver.receive` is the one pipeline:
it verifies first and parses only what it verified, so a forged request never reaches the parser, let
alone storage; a provider's receiver only fills in :meth:`~WebhookReceiver.verify` and
:meth:`~WebhookReceiver.parse`.

=================  ===========================================  ==============================================
route              verified by                                   settings
=================  ===========================================  ==============================================
email/sendgrid     ECDSA P-256 over timestamp + body             ``HERALD_SENDGRID_WEBHOOK_PUBLIC_KEY``
email/ses          SNS signature v1/v2, certificate allow-list   ``HERALD_SES_SNS_CERT_URL_PATTERN``,
                                                                 ``_SUBSCRIBE_URL_PATTERN``, ``_TOPIC_ARNS``
sms/twilio         ``X-Twilio-Signature`` over URL + form        ``HERALD_TWILIO_AUTH_TOKEN``
whatsapp/twilio    the same                                      the same
whatsapp/meta      ``X-Hub-Signature-256`` (+ the GET handshake)  ``HERALD_META_APP_SECRET``, ``_VERIFY_TOKEN``
=================  ===========================================  ==============================================

Recipients' replies (STOP / START / HELP) come in on ``sms/twilio/inbound`` (verified as ``sms/twilio``,
:meth:`WebhookReceiver.inbound`) and inside Meta's webhook (``messages[]`` beside ``statuses[]``).

``HERALD_WEBHOOK_TOLERANCE_SECONDS`` (300) is how far a signed timestamp (SendGrid, SNS) may be from our
clock before the request counts as a replay. SNS SMS reports no deliveries, so it has no receiver.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any, ClassVar, Generic, Self, TypeVar

from drivers.email import sendgrid_webhooks, ses_webhooks
from drivers.email._sns import SnsMessage
from drivers.sms import twilio_webhooks
from drivers.toolkit import SettingsReader
from drivers.whatsapp import meta_webhooks
from engine.channels import Channel
from engine.errors import ConfigurationError
from engine.feedback.events import WebhookError, WebhookPayloadError, WebhookReceipt, WebhookRequest

TOLERANCE_SETTING = "HERALD_WEBHOOK_TOLERANCE_SECONDS"
DEFAULT_TOLERANCE_S = 300.0


def _tolerance_s(env: Mapping[str, str]) -> float:
    return SettingsReader(env).number(TOLERANCE_SETTING, DEFAULT_TOLERANCE_S)


V = TypeVar("V")


@contextmanager
def _payload_errors(provider: str) -> Iterator[None]:
    """A verified body of a shape the parser did not expect (a number where a list goes, a list where an
    object goes) is the sender's error, 400, not ours: the parsers' lookups fail on it as they may."""
    try:
        yield
    except (TypeError, AttributeError, KeyError, IndexError, ValueError) as err:
        raise WebhookPayloadError(f"the body is not a {provider} webhook payload ({type(err).__name__})") from None


class WebhookReceiver(ABC, Generic[V]):
    """One provider's webhook on one channel.

    :meth:`receive` is the pipeline, the same for every provider: :meth:`verify` the request, then
    :meth:`parse` what it verified into a :class:`WebhookReceipt`. ``V`` is what verifying yields for the
    parser (the SNS message for SES; nothing for a signature over the raw body).
    """

    provider: ClassVar[str]
    channel: ClassVar[Channel]

    @classmethod
    @abstractmethod
    def from_env(cls, env: Mapping[str, str]) -> Self:
        """Raises: ConfigurationError naming the setting that is missing or malformed."""

    async def receive(self, request: WebhookRequest) -> WebhookReceipt:
        """Verify the request, then parse it.

        Raises:
            WebhookError: a forgery or replay (401/403, nothing to record), a body that is not the
                provider's (400), or a signing certificate we could not fetch (502).
        """
        verified = await self.verify(request)
        with _payload_errors(self.provider):
            return self.parse(request, verified)

    @abstractmethod
    async def verify(self, request: WebhookRequest) -> V:
        """Check the request by the provider's own scheme, in constant time.

        Raises:
            WebhookError: as :meth:`receive`; nothing of the request is parsed or recorded then.
        """

    @abstractmethod
    def parse(self, request: WebhookRequest, verified: V) -> WebhookReceipt:
        """The normalized events (and replies) of a verified request.

        Raises:
            WebhookPayloadError: the body is not the provider's (400).
        """

    async def inbound(self, request: WebhookRequest) -> WebhookReceipt:
        """Verify an incoming-message webhook (a recipient's reply), then parse it.

        Raises:
            WebhookError: as :meth:`receive`; 405 for a provider with no such webhook.
        """
        raise WebhookError(f"{self.provider} has no incoming-message webhook here", status_code=405)

    def handshake(self, request: WebhookRequest) -> str:
        """The body of the answer to a provider's verification GET.

        Raises:
            WebhookError: the provider has no such handshake, or the request does not pass it.
        """
        raise WebhookError(f"{self.provider} has no verification handshake", status_code=405)


class SendgridReceiver(WebhookReceiver[None]):
    provider: ClassVar[str] = "sendgrid"
    channel: ClassVar[Channel] = Channel.EMAIL

    def __init__(self, verifier: sendgrid_webhooks.SendgridWebhookVerifier) -> None:
        self.verifier = verifier

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Self:
        return cls(sendgrid_webhooks.SendgridWebhookVerifier.from_env(env, tolerance_s=_tolerance_s(env)))

    async def verify(self, request: WebhookRequest) -> None:
        self.verifier.verify(request.body, request.headers)

    def parse(self, request: WebhookRequest, verified: None) -> WebhookReceipt:
        return WebhookReceipt(events=sendgrid_webhooks.parse_events(request.body))


class SesReceiver(WebhookReceiver[SnsMessage]):
    provider: ClassVar[str] = "ses"
    channel: ClassVar[Channel] = Channel.EMAIL

    def __init__(self, webhook: ses_webhooks.SesWebhook) -> None:
        self.webhook = webhook  #: keeps the signing certificates it fetched

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Self:
        return cls(ses_webhooks.SesWebhook.from_env(env, tolerance_s=_tolerance_s(env)))

    async def verify(self, request: WebhookRequest) -> SnsMessage:
        return await self.webhook.verify(request.body, request.headers)

    def parse(self, request: WebhookRequest, verified: SnsMessage) -> WebhookReceipt:
        delivery = ses_webhooks.SesWebhook.parse(verified)
        return WebhookReceipt(events=delivery.events, confirm_url=delivery.subscribe_url)


class TwilioSmsReceiver(WebhookReceiver[None]):
    provider: ClassVar[str] = "twilio"
    channel: ClassVar[Channel] = Channel.SMS

    def __init__(self, verifier: twilio_webhooks.TwilioWebhookVerifier) -> None:
        self.verifier = verifier

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Self:
        return cls(twilio_webhooks.TwilioWebhookVerifier.from_env(env))

    async def verify(self, request: WebhookRequest) -> None:
        self.verifier.verify(request.url, request.body, request.headers)

    def parse(self, request: WebhookRequest, verified: None) -> WebhookReceipt:
        events = twilio_webhooks.parse_status_callback(
            request.body, url=request.url, channel=self.channel, received_at=datetime.now(UTC)
        )
        return WebhookReceipt(events=events)

    async def inbound(self, request: WebhookRequest) -> WebhookReceipt:
        await self.verify(request)
        with _payload_errors(self.provider):
            return WebhookReceipt(inbound=twilio_webhooks.parse_inbound(request.body, channel=self.channel))


class TwilioWhatsappReceiver(TwilioSmsReceiver):
    channel: ClassVar[Channel] = Channel.WHATSAPP


class MetaReceiver(WebhookReceiver[None]):
    provider: ClassVar[str] = "meta"
    channel: ClassVar[Channel] = Channel.WHATSAPP

    def __init__(self, verifier: meta_webhooks.MetaWebhookVerifier) -> None:
        self.verifier = verifier

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Self:
        return cls(meta_webhooks.MetaWebhookVerifier.from_env(env))

    async def verify(self, request: WebhookRequest) -> None:
        self.verifier.verify(request.body, request.headers)

    def parse(self, request: WebhookRequest, verified: None) -> WebhookReceipt:
        events, inbound = meta_webhooks.parse(request.body)
        return WebhookReceipt(events=events, inbound=inbound)

    def handshake(self, request: WebhookRequest) -> str:
        return self.verifier.handshake(request.query)


RECEIVERS: dict[tuple[Channel, str], type[WebhookReceiver[Any]]] = {
    (Channel.EMAIL, "sendgrid"): SendgridReceiver,
    (Channel.EMAIL, "ses"): SesReceiver,
    (Channel.SMS, "twilio"): TwilioSmsReceiver,
    (Channel.WHATSAPP, "twilio"): TwilioWhatsappReceiver,
    (Channel.WHATSAPP, "meta"): MetaReceiver,
}


def create_receiver(channel: Channel, provider: str, env: Mapping[str, str]) -> WebhookReceiver[Any]:
    """The receiver of ``(channel, provider)`` from its settings.

    Raises:
        ConfigurationError: no webhook for that provider on that channel, or a setting it needs is missing.
    """
    cls = RECEIVERS.get((channel, provider))
    if cls is None:
        known = sorted(f"{c.value}/{p}" for c, p in RECEIVERS)
        raise ConfigurationError(f"no {channel.value} webhook for {provider!r}; known: {', '.join(known)}")
    return cls.from_env(env)
