"""Local emulators of every provider, for tests and for ``herald up --fake-providers``."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
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
    email: Any
    mobile: Any
    env: dict[str, str]

    def stop(self) -> None:
        self.mobile.stop()
        self.email.stop()


def run_fakes(directory: Path | None = None) -> AllFakes:
    """Start every emulator; ``env`` points each driver at its emulator (credentials are test values)."""
    from drivers.fakes.email import start_email_fakes
    from drivers.fakes.twilio import start_mobile_fakes

    email, email_env = start_email_fakes()
    try:
        mobile = start_mobile_fakes(directory or Path(tempfile.mkdtemp(prefix="herald-fakes-")))
    except BaseException:
        email.stop()
        raise
    # Attachments are fetched from moto's S3 (create buckets there with boto3 at ``env["HERALD_S3_ENDPOINT_URL"]``).
    s3 = {"HERALD_S3_ENDPOINT_URL": email.aws.moto_url, "HERALD_S3_REGION": "us-east-1"}
    return AllFakes(email, mobile, {**email_env, **mobile.env, **s3})
