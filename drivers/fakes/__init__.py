"""Local emulators of every provider, for tests and for ``herald up --fake-providers``.

:mod:`drivers.fakes.base` holds what they share (server thread, fault plan, recorder, control
endpoints); each provider's emulator is one module on it, and none imports another.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: Which providers ``--fake-providers`` enables, per channel, in failover order.
FAKE_PROVIDERS: dict[str, str] = {
    "HERALD_EMAIL_PROVIDERS": "ses,sendgrid,smtp",
    "HERALD_SMS_PROVIDERS": "twilio,sns",
    "HERALD_PUSH_PROVIDERS": "fcm,apns",
    "HERALD_WHATSAPP_PROVIDERS": "meta,twilio",
}


@dataclass
class AllFakes:
    """Every emulator, running; ``env`` points each driver at its own (credentials are test values)."""

    aws: Any = None  #: moto (SES, SNS, S3) behind its fault proxy
    sendgrid: Any = None
    smtp: Any = None
    twilio: Any = None  #: SMS and WhatsApp
    meta: Any = None
    fcm: Any = None
    apns: Any = None
    env: dict[str, str] = field(default_factory=dict)

    def reset(self) -> None:
        """Forget every emulator's scripted faults, recordings and learned state."""
        for handle in (self.aws, self.smtp):
            handle.reset()
        for running in (self.sendgrid, self.twilio, self.meta, self.fcm, self.apns):
            running.emulator.reset()

    def stop(self) -> None:
        for handle in (self.apns, self.fcm, self.meta, self.twilio, self.smtp, self.sendgrid, self.aws):
            if handle is not None:
                handle.stop()


#: Where each emulator that reports deliveries posts them, under Herald's public URL (Twilio is told
#: per message, by the ``StatusCallback`` Herald sends).
WEBHOOK_PATHS: dict[str, str] = {
    "sendgrid": "/webhooks/email/sendgrid",
    "ses": "/webhooks/email/ses",
    "meta": "/webhooks/whatsapp/meta",
    "twilio_inbound": "/webhooks/sms/twilio/inbound",
}


def run_fakes(directory: Path | None = None, *, public_url: str | None = None) -> AllFakes:
    """Start every emulator. ``directory`` receives the FCM service-account file, the APNs ``.p8`` key and
    the APNs emulator's TLS CA. Attachments are read from moto's S3 (create buckets there with boto3 at
    ``env["HERALD_S3_ENDPOINT_URL"]``). With ``public_url`` (Herald's ``HERALD_PUBLIC_URL``) the emulators
    report deliveries to Herald's webhooks as the providers do (:data:`WEBHOOK_PATHS`), and ``env`` holds
    the keys and secrets that verify them."""
    from drivers.fakes.apns import start_apns
    from drivers.fakes.aws import start_aws
    from drivers.fakes.fcm import start_fcm
    from drivers.fakes.meta import start_meta
    from drivers.fakes.sendgrid import start_sendgrid
    from drivers.fakes.smtp import start_smtp
    from drivers.fakes.twilio import start_twilio

    where = directory or Path(tempfile.mkdtemp(prefix="herald-fakes-"))
    fakes = AllFakes(env={"HERALD_EMAIL_FROM": "Herald <no-reply@herald.local>"})
    base = public_url.rstrip("/") if public_url else None
    hooks = {name: f"{base}{path}" if base else None for name, path in WEBHOOK_PATHS.items()}
    starts: dict[str, Callable[[], tuple[Any, dict[str, str]]]] = {
        "aws": lambda: _with_env(start_aws(sns_endpoint=hooks["ses"])),
        "sendgrid": lambda: start_sendgrid(webhook_url=hooks["sendgrid"]),
        "smtp": lambda: _with_env(start_smtp()),
        "twilio": lambda: start_twilio(inbound_url=hooks["twilio_inbound"]),
        "meta": lambda: start_meta(webhook_url=hooks["meta"]),
        "fcm": lambda: start_fcm(where),
        "apns": lambda: start_apns(where),
    }
    try:
        for name, start in starts.items():
            handle, env = start()
            setattr(fakes, name, handle)
            fakes.env.update(env)
    except BaseException:
        fakes.stop()
        raise
    return fakes


def _with_env(handle: Any) -> tuple[Any, dict[str, str]]:
    return handle, handle.env()
