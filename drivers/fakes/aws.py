"""moto (SES v2, SNS, S3) on a loopback port, behind a fault-injecting proxy built on the shared emulator.

The proxy records and forwards every request to moto unless a fault is scripted, in which case it answers
with an AWS error in the request's protocol: rest-json (``x-amzn-ErrorType`` header + ``{"message": ...}``)
for SES v2 and S3-style JSON APIs, the Query protocol's XML ``ErrorResponse`` for form-encoded requests
(SNS). The sender identities in :data:`VERIFIED_IDENTITIES` are verified in moto so sends from them
succeed; any other sender gets moto's ``MessageRejected``. SES v2 ``GetAccount`` (``GET /v2/email/account``,
the SES driver's health check) is answered by the proxy itself (moto has none): sending is enabled until
``POST /_state {"ses_sending_enabled": false}``; script its failure with a fault on that path.

SES events reach Herald as they do from AWS, through an SNS HTTP subscription (``sns_endpoint``, or
``POST /_state {"sns_endpoint": ...}``): every email SES v2 accepted is followed by a signed SNS
``Notification`` holding the SES event, ``Delivery`` by default, a permanent ``Bounce`` (``NoEmail``), a
transient one (``MailboxFull``) or a ``Complaint`` for addresses marked so (``POST /_state {"bounce":
[...], "soft_bounce": [...], "complaint": [...]}``). A send with a configuration set gets the
event-publishing dialect (``eventType``, with the ``herald_message_id`` tag), one without it the
identity-notification dialect (``notificationType``). Messages are signed (SignatureVersion 2, or 1 by
``{"signature_version": "1"}``) with the proxy's own key, whose certificate it serves at
:attr:`AwsProxy.cert_path`: ``HERALD_SES_SNS_CERT_URL_PATTERN`` allows it. ``POST /_state {"subscribe":
true}`` sends a ``SubscriptionConfirmation`` whose ``SubscribeURL`` (``/?Action=ConfirmSubscription``,
allowed by ``HERALD_SES_SNS_SUBSCRIBE_URL_PATTERN``) the proxy answers and records (``confirmed``).
"""

from __future__ import annotations

import base64
import json
import re
import secrets
import urllib.parse
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any
from xml.sax.saxutils import escape

import boto3
import httpx
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID
from moto.core import DEFAULT_ACCOUNT_ID
from moto.server import ThreadedMotoServer
from moto.ses.models import ses_backends
from moto.sns.models import sns_backends

from drivers.fakes.base import Answer, Callback, Emulator, Exchange, Fault, RunningEmulator, json_answer

REGION = "us-east-1"
ACCESS_KEY_ID = "testing"
SECRET_ACCESS_KEY = "testing"
VERIFIED_IDENTITIES = ("herald.local", "no-reply@herald.local")
#: The topic SES publishes its events to; the one ``HERALD_SES_SNS_TOPIC_ARNS`` names.
SES_TOPIC_ARN = f"arn:aws:sns:{REGION}:123456789012:herald-ses-events"
_DROPPED = ("content-length", "transfer-encoding", "content-encoding", "connection")
_SEND_EMAIL = "/v2/email/outbound-emails"
_GET_ACCOUNT = "/v2/email/account"
#: Keys SNS signs, in order, per message type.
_SIGNED = {
    "Notification": ("Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type"),
    "SubscriptionConfirmation": ("Message", "MessageId", "SubscribeURL", "Timestamp", "Token", "TopicArn", "Type"),
}


def _self_signed() -> tuple[rsa.RSAPrivateKey, bytes]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sns.amazonaws.com")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=365))
        .sign(key, hashes.SHA256())
    )
    return key, cert.public_bytes(serialization.Encoding.PEM)


def _stamp(at: datetime | None = None) -> str:
    return (at or datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def query_error(code: str, message: str, status: int) -> str:
    """An AWS Query-protocol (SNS) error document."""
    kind = "Server" if status >= 500 else "Sender"
    return (
        f'<ErrorResponse xmlns="http://sns.amazonaws.com/doc/2010-03-31/"><Error><Type>{kind}</Type>'
        f"<Code>{escape(code)}</Code><Message>{escape(message)}</Message></Error>"
        f"<RequestId>{uuid.uuid4()}</RequestId></ErrorResponse>"
    )


class AwsProxy(Emulator):
    """Forwards to moto; scripted faults are AWS errors (``body`` = ``{"code", "message"}``)."""

    name = "aws"

    def __init__(self, upstream: str, *, sns_endpoint: str | None = None) -> None:
        super().__init__()
        self.upstream = upstream
        self.url = ""  #: where the proxy is served (set once it listens): SNS's own address here
        self.sns_endpoint = sns_endpoint
        self.signature_version = "2"
        self.signing_key, self.certificate = _self_signed()
        self.cert_path = f"/SimpleNotificationService-{secrets.token_hex(16)}.pem"
        self.outcomes: dict[str, str] = {}  #: address -> bounce | soft_bounce | complaint
        self.confirmed: list[str] = []  #: subscription tokens confirmed through the SubscribeURL
        self.ses_sending_enabled = True
        self._client: httpx.AsyncClient | None = None  #: opened in the server's own event loop

    async def respond(self, request: Exchange) -> Answer:
        # SNS's own endpoints answer before faults and recording: they are not the APIs under test.
        if request.method == "GET" and request.path == self.cert_path:
            return 200, {"content-type": "application/x-pem-file"}, self.certificate
        query = dict(urllib.parse.parse_qsl(request.query))
        if request.path == "/" and query.get("Action") == "ConfirmSubscription" and request.method == "GET":
            self.confirmed.append(query.get("Token", ""))
            arn = escape(f"{query.get('TopicArn', SES_TOPIC_ARN)}:{uuid.uuid4()}")
            body = (
                '<ConfirmSubscriptionResponse xmlns="http://sns.amazonaws.com/doc/2010-03-31/">'
                f"<ConfirmSubscriptionResult><SubscriptionArn>{arn}</SubscriptionArn></ConfirmSubscriptionResult>"
                "</ConfirmSubscriptionResponse>"
            )
            return 200, {"content-type": "text/xml"}, body.encode()
        return await super().respond(request)

    async def handle_async(self, request: Exchange) -> Answer:
        if request.method == "GET" and request.path == _GET_ACCOUNT:
            return json_answer(200, self._ses_account())
        if self._client is None:
            self._client = httpx.AsyncClient(base_url=self.upstream, timeout=30)
        headers = {k: v for k, v in request.headers.items() if k not in ("host", "content-length")}
        url = f"{request.path}?{request.query}" if request.query else request.path
        upstream = await self._client.request(request.method, url, headers=headers, content=request.body)
        out = {k: v for k, v in upstream.headers.items() if k.lower() not in _DROPPED}
        if request.method == "POST" and request.path == _SEND_EMAIL and upstream.status_code == 200:
            self._report(json.loads(request.body), str(upstream.json().get("MessageId")))
        return upstream.status_code, out, upstream.content

    def _ses_account(self) -> dict[str, Any]:
        """SES v2 ``GetAccount`` of the emulated account."""
        return {
            "DedicatedIpAutoWarmupEnabled": False,
            "EnforcementStatus": "HEALTHY",
            "ProductionAccessEnabled": True,
            "SendingEnabled": self.ses_sending_enabled,
            "SendQuota": {"Max24HourSend": 50000.0, "MaxSendRate": 14.0, "SentLast24Hours": 0.0},
        }

    # -- SES events through SNS ------------------------------------------------------------------------

    def sign(self, doc: dict[str, Any], version: str | None = None) -> bytes:
        """``doc`` (an SNS message without its signature) signed as SNS signs it, with this proxy's
        certificate URL."""
        doc = {**doc, "SignatureVersion": version or self.signature_version}
        doc["SigningCertURL"] = self.url + self.cert_path
        text = "".join(f"{k}\n{doc[k]}\n" for k in _SIGNED[doc["Type"]] if doc.get(k) is not None)
        algorithm = hashes.SHA1() if doc["SignatureVersion"] == "1" else hashes.SHA256()
        doc["Signature"] = base64.b64encode(
            self.signing_key.sign(text.encode(), padding.PKCS1v15(), algorithm)
        ).decode()
        return json.dumps(doc).encode()

    def _post_sns(self, doc: dict[str, Any]) -> None:
        if not self.sns_endpoint:
            return
        headers = {
            "content-type": "text/plain; charset=UTF-8",
            "user-agent": "Amazon Simple Notification Service Agent",
            "x-amz-sns-message-type": doc["Type"],
            "x-amz-sns-message-id": doc["MessageId"],
            "x-amz-sns-topic-arn": doc["TopicArn"],
        }
        self.notifier.post(Callback(self.sns_endpoint, self.sign(doc), headers))

    def _report(self, request: dict[str, Any], message_id: str) -> None:
        destination = request.get("Destination") or {}
        recipients = [str(a) for a in destination.get("ToAddresses") or []]
        tags = {str(t.get("Name")): [str(t.get("Value"))] for t in request.get("EmailTags") or []}
        config_set = request.get("ConfigurationSetName")
        if config_set:
            tags["ses:configuration-set"] = [str(config_set)]
        mail = {
            "timestamp": _stamp(),
            "source": str(request.get("FromEmailAddress") or ""),
            "sendingAccountId": "123456789012",
            "messageId": message_id,
            "destination": recipients,
            **({"tags": tags} if config_set else {}),
        }
        for address in recipients:
            event = ses_event(self.outcomes.get(address.lower(), "delivery"), mail, address)
            if config_set:
                event["eventType"] = event.pop("notificationType")
            self._post_sns(
                {
                    "Type": "Notification",
                    "MessageId": str(uuid.uuid4()),
                    "TopicArn": SES_TOPIC_ARN,
                    "Subject": "Amazon SES Email Event Notification",
                    "Message": json.dumps(event),
                    "Timestamp": _stamp(),
                    "UnsubscribeURL": f"{self.url}/?Action=Unsubscribe&SubscriptionArn={SES_TOPIC_ARN}:herald",
                }
            )

    def subscribe(self) -> None:
        """Send the endpoint a SubscriptionConfirmation, as SNS does when it is subscribed."""
        token = secrets.token_hex(32)
        query = urllib.parse.urlencode({"Action": "ConfirmSubscription", "TopicArn": SES_TOPIC_ARN, "Token": token})
        self._post_sns(
            {
                "Type": "SubscriptionConfirmation",
                "MessageId": str(uuid.uuid4()),
                "Token": token,
                "TopicArn": SES_TOPIC_ARN,
                "Message": f"You have chosen to subscribe to the topic {SES_TOPIC_ARN}. To confirm, visit the "
                "SubscribeURL included in this message.",
                "SubscribeURL": f"{self.url}/?{query}",
                "Timestamp": _stamp(),
            }
        )

    def reset_state(self) -> None:
        self.outcomes.clear()
        self.confirmed.clear()
        self.signature_version = "2"
        self.ses_sending_enabled = True

    def control(self, doc: dict[str, Any]) -> dict[str, Any]:
        """``{"sns_endpoint", "bounce": [...], "soft_bounce": [...], "complaint": [...], "signature_version",
        "subscribe": true, "ses_sending_enabled": bool}``."""
        if "ses_sending_enabled" in doc:
            self.ses_sending_enabled = bool(doc["ses_sending_enabled"])
        if "sns_endpoint" in doc:
            self.sns_endpoint = doc["sns_endpoint"]
        for outcome in ("bounce", "soft_bounce", "complaint"):
            self.outcomes.update({str(a).lower(): outcome for a in doc.get(outcome, [])})
        self.signature_version = str(doc.get("signature_version", self.signature_version))
        if doc.get("subscribe"):
            self.subscribe()
        return {"sns_endpoint": self.sns_endpoint, "confirmed": len(self.confirmed)}

    def fault_answer(self, fault: Fault, request: Exchange) -> Answer:
        error = fault.body if isinstance(fault.body, dict) else {}
        code, message = str(error.get("code") or ""), str(error.get("message") or "")
        if not code:
            return fault.answer()
        if "form" in request.headers.get("content-type", ""):
            body = query_error(code, message or code, fault.status)
            return fault.status, {"content-type": "text/xml", **fault.headers}, body.encode()
        headers = {"x-amzn-ErrorType": code, "x-amzn-RequestId": "fault-0000", **fault.headers}
        return json_answer(fault.status, {"message": message or code}, headers)


def ses_event(outcome: str, mail: dict[str, Any], address: str) -> dict[str, Any]:
    """The SES event document (identity-notification dialect) of one recipient's outcome."""
    now = _stamp()
    if outcome == "delivery":
        detail = {
            "timestamp": now,
            "recipients": [address],
            "processingTimeMillis": 420,
            "reportingMTA": "a8-70.smtp-out.emulator.amazonses.com",
            "smtpResponse": "250 2.0.0 OK accepted",
        }
        return {"notificationType": "Delivery", "mail": mail, "delivery": detail}
    if outcome == "complaint":
        detail = {
            "timestamp": now,
            "feedbackId": str(uuid.uuid4()),
            "complaintFeedbackType": "abuse",
            "complainedRecipients": [{"emailAddress": address}],
        }
        return {"notificationType": "Complaint", "mail": mail, "complaint": detail}
    hard = outcome == "bounce"
    detail = {
        "timestamp": now,
        "feedbackId": str(uuid.uuid4()),
        "bounceType": "Permanent" if hard else "Transient",
        "bounceSubType": "NoEmail" if hard else "MailboxFull",
        "bouncedRecipients": [
            {
                "emailAddress": address,
                "action": "failed",
                "status": "5.1.1" if hard else "4.2.2",
                "diagnosticCode": "smtp; 550 5.1.1 user unknown" if hard else "smtp; 452 4.2.2 mailbox full",
            }
        ],
    }
    return {"notificationType": "Bounce", "mail": mail, "bounce": detail}


class AwsHandle:
    """``.url`` (the fault proxy), ``.moto_url``, ``.proxy`` (the emulator), ``.fail(...)``, ``.sent_ses()``,
    ``.sent_sms()``, ``.env()``, ``.stop()``."""

    def __init__(self, *, sns_endpoint: str | None = None) -> None:
        self.moto = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        self.moto.start()
        host, port = self.moto.get_host_and_port()
        self.moto_url = f"http://{host}:{port}"
        self.proxy = AwsProxy(self.moto_url, sns_endpoint=sns_endpoint)
        try:
            self._server = RunningEmulator(self.proxy)
        except BaseException:
            self.moto.stop()
            raise
        self.url = self.proxy.url = self._server.url
        self.verify(*VERIFIED_IDENTITIES)

    def client(self, service: str) -> Any:
        return boto3.client(
            service,
            region_name=REGION,
            endpoint_url=self.moto_url,
            aws_access_key_id=ACCESS_KEY_ID,
            aws_secret_access_key=SECRET_ACCESS_KEY,
        )

    def verify(self, *identities: str) -> None:
        ses = self.client("ses")
        for identity in identities:
            if "@" in identity:
                ses.verify_email_identity(EmailAddress=identity)
            else:
                ses.verify_domain_identity(Domain=identity)

    def fail(
        self,
        code: str,
        status: int = 400,
        message: str = "",
        *,
        count: int = 1,
        after: int = 0,
        latency_ms: int = 0,
        outage: bool = False,
        path: str = "",
    ) -> None:
        """Answer the next ``count`` requests (after ``after`` of them) with this AWS error; ``status=0``
        only adds latency."""
        body = {"code": code, "message": message}
        self.proxy.fail(status, body, count=count, after=after, latency_ms=latency_ms, outage=outage, path=path)

    def reset(self) -> None:
        self.proxy.reset()

    def sent_ses(self) -> list[Any]:
        """The messages moto's SES accepted (``RawMessage`` / ``Message`` objects), oldest first."""
        return list(ses_backends[DEFAULT_ACCOUNT_ID][REGION].sent_messages)

    def sent_sms(self) -> dict[str, tuple[str, str]]:
        """The SMS moto's SNS accepted: message id -> (number, text)."""
        return dict(sns_backends[DEFAULT_ACCOUNT_ID][REGION].sms_messages)

    def env(self) -> dict[str, str]:
        """The settings that point the SES and SNS drivers (and the S3 attachment fetcher) at the proxy."""
        return {
            "HERALD_SES_REGION": REGION,
            "HERALD_SES_ENDPOINT_URL": self.url,
            "HERALD_SES_FROM": "Herald <no-reply@herald.local>",
            "HERALD_SNS_REGION": REGION,
            "HERALD_SNS_ENDPOINT_URL": self.url,
            "HERALD_S3_ENDPOINT_URL": self.moto_url,
            "HERALD_S3_REGION": REGION,
            "AWS_ACCESS_KEY_ID": ACCESS_KEY_ID,
            "AWS_SECRET_ACCESS_KEY": SECRET_ACCESS_KEY,
            "AWS_REGION": REGION,
            # SES events: the SNS signing certificate and SubscribeURL this proxy serves, and its topic
            "HERALD_SES_SNS_CERT_URL_PATTERN": f"^{re.escape(self.url)}/SimpleNotificationService-[0-9a-f]+\\.pem$",
            "HERALD_SES_SNS_SUBSCRIBE_URL_PATTERN": f"^{re.escape(self.url + '/?Action=ConfirmSubscription&')}",
            "HERALD_SES_SNS_TOPIC_ARNS": SES_TOPIC_ARN,
        }

    def stop(self) -> None:
        self._server.stop()
        self.moto.stop()


def start_aws(*, sns_endpoint: str | None = None) -> AwsHandle:
    """moto behind the proxy; SES events go to ``sns_endpoint`` (Herald's ``/webhooks/email/ses``), if given."""
    return AwsHandle(sns_endpoint=sns_endpoint)
