"""All three email emulators at once: moto (SES) behind its fault proxy, SendGrid and SMTP."""

from __future__ import annotations

from dataclasses import dataclass

from drivers.fakes.aws import AwsHandle, start_aws
from drivers.fakes.sendgrid import SendgridHandle, start_sendgrid
from drivers.fakes.smtp import SmtpHandle, start_smtp


@dataclass
class EmailFakes:
    aws: AwsHandle
    sendgrid: SendgridHandle
    smtp: SmtpHandle

    def stop(self) -> None:
        for handle in (self.smtp, self.sendgrid, self.aws):
            handle.stop()


def start_email_fakes(*, dkim_txt: bytes | None = None) -> tuple[EmailFakes, dict[str, str]]:
    """Start the emulators; returns them and the settings that point the ses/sendgrid/smtp drivers at them."""
    aws = start_aws()
    try:
        sendgrid = start_sendgrid()
        smtp = start_smtp(dkim_txt=dkim_txt)
    except BaseException:
        aws.stop()
        raise
    fakes = EmailFakes(aws, sendgrid, smtp)
    env = {**aws.env(), **sendgrid.env(), **smtp.env(), "HERALD_EMAIL_FROM": "Herald <no-reply@herald.local>"}
    return fakes, env
