"""Explicit driver registry: (channel, provider) -> dotted path, imported lazily.

A provider whose optional dependencies are not installed raises a ConfigurationError naming the extra.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping

from engine.channels import Channel
from engine.errors import ConfigurationError

from .base import Driver

REGISTRY: dict[tuple[Channel, str], str] = {
    (Channel.EMAIL, "console"): "drivers.email.console:ConsoleEmailDriver",
    (Channel.EMAIL, "ses"): "drivers.email.ses:SesDriver",
    (Channel.EMAIL, "sendgrid"): "drivers.email.sendgrid:SendgridDriver",
    (Channel.EMAIL, "smtp"): "drivers.email.smtp:SmtpDriver",
    (Channel.SMS, "console"): "drivers.sms.console:ConsoleSmsDriver",
    (Channel.SMS, "twilio"): "drivers.sms.twilio:TwilioSmsDriver",
    (Channel.SMS, "sns"): "drivers.sms.sns:SnsDriver",
    (Channel.WHATSAPP, "twilio"): "drivers.whatsapp.twilio:TwilioWhatsappDriver",
    (Channel.WHATSAPP, "meta"): "drivers.whatsapp.meta:MetaWhatsappDriver",
    (Channel.PUSH, "fcm"): "drivers.push.fcm:FcmDriver",
    (Channel.PUSH, "apns"): "drivers.push.apns:ApnsDriver",
    (Channel.INAPP, "store"): "drivers.inapp.store:InappDriver",
}



def driver_class(channel: Channel, provider: str) -> type[Driver]:
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
    cls: type[Driver] = getattr(module, attr)
    return cls


def create_driver(channel: Channel, provider: str, env: Mapping[str, str]) -> Driver:
    return driver_class(channel, provider).from_env(env)
