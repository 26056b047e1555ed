"""Explicit driver registry: (channel, provider) -> dotted path, imported lazily.

The lazy dotted paths below are the one place where Herald imports code by name. A provider whose
optional dependencies are not installed raises a ConfigurationError naming it. The composition root
(actors/, serve_app/) builds drivers with :func:`create_driver` and hands them to the engine.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping

from engine.channels import Channel
from engine.errors import ConfigurationError

from .base import BaseDriver, DriverServices

REGISTRY: dict[tuple[Channel, str], str] = {
    (Channel.EMAIL, "console"): "drivers.email.console:ConsoleEmailDriver",
    (Channel.EMAIL, "ses"): "drivers.email.ses:SesDriver",
    (Channel.EMAIL, "sendgrid"): "drivers.email.sendgrid:SendgridDriver",
    (Channel.EMAIL, "smtp"): "drivers.email.smtp:SmtpDriver",
    (Channel.EMAIL, "sink"): "drivers.sink:EmailSink",
    (Channel.SMS, "console"): "drivers.sms.console:ConsoleSmsDriver",
    (Channel.SMS, "twilio"): "drivers.sms.twilio:TwilioSmsDriver",
    (Channel.SMS, "sns"): "drivers.sms.sns:SnsDriver",
    (Channel.SMS, "sink"): "drivers.sink:SmsSink",
    (Channel.WHATSAPP, "twilio"): "drivers.whatsapp.twilio:TwilioWhatsappDriver",
    (Channel.WHATSAPP, "meta"): "drivers.whatsapp.meta:MetaWhatsappDriver",
    (Channel.WHATSAPP, "sink"): "drivers.sink:WhatsappSink",
    (Channel.PUSH, "fcm"): "drivers.push.fcm:FcmDriver",
    (Channel.PUSH, "apns"): "drivers.push.apns:ApnsDriver",
    (Channel.PUSH, "sink"): "drivers.sink:PushSink",
    (Channel.INAPP, "store"): "drivers.inapp.store:InappDriver",
    (Channel.INAPP, "sink"): "drivers.sink:InappSink",
}

#: No services handed in (tests, ``herald config``): drivers that need one say so when built.
NO_SERVICES = DriverServices()


def driver_class(channel: Channel, provider: str) -> type[BaseDriver]:
    try:
        dotted = REGISTRY[(channel, provider)]
    except KeyError:
        known = sorted(p for c, p in REGISTRY if c == channel)
        raise ConfigurationError(f"no {channel} provider {provider!r}; known: {', '.join(known)}") from None
    module_name, _, attr = dotted.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise ConfigurationError(f"provider {provider!r} cannot be loaded ({err}); reinstall Herald") from err
    cls: type[BaseDriver] = getattr(module, attr)
    return cls


def create_driver(
    channel: Channel, provider: str, env: Mapping[str, str], services: DriverServices = NO_SERVICES
) -> BaseDriver:
    """The driver of ``(channel, provider)`` from its settings and the services the runtime hands in.

    Raises:
        ConfigurationError: an unknown provider, or a setting (or service) it needs is missing.
    """
    return driver_class(channel, provider).create(env, services)
