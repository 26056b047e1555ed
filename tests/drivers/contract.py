"""How the driver contract suite drives each registered driver: one :class:`Case` per registry entry.

A case builds the driver against its emulator (from the session's ``run_fakes``), makes a valid message,
scripts each failure class the provider can answer, a provider-wide outage after ``n`` requests, a slow
answer, and says which secrets and addresses must never reach a log. ``test_contract.py`` runs the same
tests over every case; a registry entry without a case fails there.
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from drivers import NO_SERVICES, create_driver
from drivers.base import BaseDriver, DriverServices
from drivers.fakes import AllFakes
from drivers.fakes.base import Emulator
from drivers.fakes.fcm import fcm_error
from drivers.fakes.meta import graph_error
from drivers.fakes.sendgrid import sg_error
from drivers.inapp.store import MemoryInboxStore
from engine.channels import Channel
from engine.delivery import Address, Content, InboxItem, OutboundMessage
from engine.errors import FailureClass

F = FailureClass
Key = tuple[Channel, str]
#: (status, body, headers) of a scripted HTTP answer.
HttpAnswer = tuple[int, Any, dict[str, str]]

EMAIL = "jane.doe@example.com"
PHONE = "+14155552671"
DEVICE = "a1" * 32
USER = "u_contract_42"
AWS_SECRET = "herald-contract-secret-key-0001"  # moto takes any secret: a distinctive one to look for


def message(channel: Channel, n: int, *, to: Address | None = None) -> OutboundMessage:
    """A valid message on ``channel`` whose body names nothing personal."""
    address = (
        to
        or {
            Channel.EMAIL: Address(email=EMAIL, name="Jane Doe"),
            Channel.SMS: Address(phone=PHONE),
            Channel.WHATSAPP: Address(phone=PHONE),
            Channel.PUSH: Address(device_token=DEVICE),
            Channel.INAPP: Address(user_id=USER),
        }[channel]
    )
    content = Content(subject="Your order shipped", text="Order 1234 is on its way.", html="<p>Order 1234</p>")
    if channel is Channel.PUSH:
        content = Content(title="Order shipped", text="Order 1234 is on its way.")
    return OutboundMessage(f"msg_{n:04d}", "t_contract", channel, address, content)


class ScriptedInbox(MemoryInboxStore):
    """An in-memory inbox whose next ``put`` raises what was scripted (a store outage, a timeout)."""

    def __init__(self) -> None:
        super().__init__()
        self.raises: BaseException | None = None
        self.stored = 0

    async def put(self, items: Sequence[InboxItem]) -> None:
        if self.raises is not None:
            raise self.raises
        self.stored += len(items)
        await super().put(items)


@dataclass
class Case:
    """A registered driver with nothing behind it but a file or memory (console, sink, in-app)."""

    key: Key
    env: dict[str, str]
    services: DriverServices = NO_SERVICES
    failures: frozenset[FailureClass] = frozenset()
    secrets: tuple[str, ...] = ()
    built: list[BaseDriver] = field(default_factory=list)

    @property
    def channel(self) -> Channel:
        return self.key[0]

    @property
    def provider(self) -> str:
        return self.key[1]

    @property
    def network(self) -> bool:
        """Whether an emulator answers over the network (outage, timeout and unreachable tests apply)."""
        return False

    def driver(self, **env: str) -> BaseDriver:
        built = create_driver(self.channel, self.provider, {**self.env, **env}, self.services)
        self.built.append(built)
        return built

    def message(self, n: int) -> OutboundMessage:
        return message(self.channel, n)

    def addresses(self) -> tuple[str, ...]:
        to = self.message(1).to
        return tuple(a for a in (to.email, (to.phone or "").lstrip("+1"), to.device_token, to.user_id) if a)

    def seen(self) -> int:
        """How many messages reached the provider side."""
        raise NotImplementedError

    def reset(self) -> None:
        """Forget drivers built and failures scripted by the last test."""
        self.built.clear()

    def arrange(self, kind: FailureClass) -> OutboundMessage | None:
        """Make the next send fail with ``kind``; a message to send instead when the failure is local."""
        raise NotImplementedError(kind)


class ConsoleCase(Case):
    def seen(self) -> int:
        path = Path(self.env["HERALD_DATA_DIR"]) / "console.jsonl"
        return len(path.read_text().splitlines()) if path.exists() else 0


class SinkCase(Case):
    def seen(self) -> int:
        return sum(getattr(d, "accepted", 0) for d in self.built)


@dataclass
class InboxCase(Case):
    inbox: ScriptedInbox = field(default_factory=ScriptedInbox)

    def __post_init__(self) -> None:
        self.services = DriverServices(inbox=self.inbox)
        self.failures = INBOX_FAILURES

    def seen(self) -> int:
        return self.inbox.stored

    def reset(self) -> None:
        super().reset()
        self.inbox.raises = None

    def arrange(self, kind: FailureClass) -> OutboundMessage | None:
        if kind is F.PERMANENT:
            return replace(self.message(1), to=Address(email=EMAIL))  # in-app needs a user id
        self.inbox.raises = ConnectionRefusedError("inbox down") if kind is F.PROVIDER_DOWN else TimeoutError()
        return None


@dataclass
class NetworkCase(Case):
    """A driver whose emulator answers over the network."""

    timeout_var: str = ""
    unreachable_env: Mapping[str, str] = field(default_factory=dict)
    answers: Mapping[FailureClass, Any] = field(default_factory=dict)
    local_failures: Mapping[FailureClass, Callable[[OutboundMessage], OutboundMessage]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.failures = frozenset(self.answers) | frozenset(self.local_failures)

    @property
    def network(self) -> bool:
        return True

    def arrange(self, kind: FailureClass) -> OutboundMessage | None:
        if kind in self.local_failures:
            return self.local_failures[kind](self.message(1))
        self.answer(kind)
        return None

    def answer(self, kind: FailureClass, *, after: int = 0, outage: bool = False) -> None:
        raise NotImplementedError

    def outage(self, after: int) -> None:
        """From the request after the first ``after`` on, every request is refused provider-wide."""
        self.answer(F.PROVIDER_DOWN, after=after, outage=True)

    def slow(self, latency_ms: int) -> None:
        """The next request is answered after ``latency_ms``."""
        raise NotImplementedError


@dataclass
class HttpCase(NetworkCase):
    emulator: Emulator | None = None
    path: str = ""  #: the send endpoint (FCM's emulator also answers OAuth token requests)

    def seen(self) -> int:
        assert self.emulator is not None
        return sum(self.path in r.path for r in list(self.emulator.received))

    def answer(self, kind: FailureClass, *, after: int = 0, outage: bool = False) -> None:
        assert self.emulator is not None
        status, body, headers = self.answers[kind]
        self.emulator.fail(status, body, headers=headers, after=after, outage=outage, path=self.path)

    def slow(self, latency_ms: int) -> None:
        assert self.emulator is not None
        self.emulator.fail(0, latency_ms=latency_ms, path=self.path)


@dataclass
class AwsCase(NetworkCase):
    fakes: AllFakes | None = None

    def seen(self) -> int:
        assert self.fakes is not None
        return self.fakes.aws.proxy.accepted()  # type: ignore[no-any-return]

    def answer(self, kind: FailureClass, *, after: int = 0, outage: bool = False) -> None:
        assert self.fakes is not None
        code, status, text = self.answers[kind]
        self.fakes.aws.fail(code, status, text, after=after, outage=outage)

    def slow(self, latency_ms: int) -> None:
        assert self.fakes is not None
        self.fakes.aws.fail("", 0, latency_ms=latency_ms)


@dataclass
class SmtpCase(NetworkCase):
    fakes: AllFakes | None = None

    def seen(self) -> int:
        assert self.fakes is not None
        return self.fakes.smtp.transactions  # type: ignore[no-any-return]

    def answer(self, kind: FailureClass, *, after: int = 0, outage: bool = False) -> None:
        assert self.fakes is not None
        stage, reply = self.answers[kind]
        self.fakes.smtp.fail(stage, reply, after=after, outage=outage)

    def slow(self, latency_ms: int) -> None:
        assert self.fakes is not None
        self.fakes.smtp.fail("DATA", "", latency_ms=latency_ms)


def _twilio(code: int, status: int, text: str, headers: dict[str, str] | None = None) -> HttpAnswer:
    return status, {"code": code, "message": text, "status": status}, headers or {}


def _meta(code: int, status: int, text: str) -> HttpAnswer:
    return status, graph_error(status, code, text)[1], {}


def _fcm(status: int, code: str) -> HttpAnswer:
    return status, fcm_error(status, f"FCM says {code}", code)[1], {}


def _apns(status: int, reason: str) -> HttpAnswer:
    return status, {"reason": reason}, {}


TWILIO_ANSWERS: dict[FailureClass, HttpAnswer] = {
    F.RETRYABLE: _twilio(20500, 503, "Internal Server Error"),
    F.THROTTLED: _twilio(20429, 429, "Too Many Requests", {"Retry-After": "3"}),
    F.PROVIDER_DOWN: _twilio(20003, 401, "Authenticate"),
    F.PERMANENT: _twilio(21617, 400, "The concatenated message body exceeds the 1600 character limit."),
    F.BAD_RECIPIENT: _twilio(21211, 400, f"The 'To' number {PHONE} is not a valid phone number."),
}
#: What each provider answers for each failure class it has (HTTP: status, body, headers; AWS: error
#: code, status, message; SMTP: stage, reply).
ANSWERS: dict[Key, Mapping[FailureClass, Any]] = {
    (Channel.EMAIL, "ses"): {
        F.RETRYABLE: ("ServiceUnavailable", 503, "Service unavailable"),
        F.THROTTLED: ("TooManyRequestsException", 429, "Maximum sending rate exceeded."),
        F.PROVIDER_DOWN: ("AccountSendingPausedException", 400, "Sending is paused for this account."),
        F.PERMANENT: ("MessageRejected", 400, f"Email address is not verified: {EMAIL}"),
    },
    (Channel.SMS, "sns"): {
        F.RETRYABLE: ("InternalError", 500, "Internal failure"),
        F.THROTTLED: ("Throttled", 429, "Rate exceeded"),
        F.PROVIDER_DOWN: ("AuthorizationError", 403, "Not authorized"),
        F.PERMANENT: ("InvalidParameter", 400, "Invalid parameter: Message too long"),
        F.BAD_RECIPIENT: ("OptedOut", 400, f"Phone number {PHONE} is opted out"),
    },
    (Channel.EMAIL, "smtp"): {
        F.RETRYABLE: ("DATA", "451 4.3.0 Try again later"),
        F.PROVIDER_DOWN: ("MAIL", "530 5.7.0 Authentication required"),
        F.PERMANENT: ("DATA", "554 5.7.1 Message rejected"),
        F.BAD_RECIPIENT: ("RCPT", f"550 5.1.1 <{EMAIL}>: no such user"),
    },
    (Channel.EMAIL, "sendgrid"): {
        F.RETRYABLE: (503, "Ack! Bad proxy!", {}),
        F.THROTTLED: (429, sg_error("too many requests"), {"Retry-After": "7"}),
        F.PROVIDER_DOWN: (401, sg_error("The provided authorization grant is invalid"), {}),
        F.PERMANENT: (400, sg_error("The subject is required.", "subject"), {}),
        F.BAD_RECIPIENT: (400, sg_error(f"Invalid address {EMAIL}", "personalizations.0.to.0.email"), {}),
    },
    (Channel.SMS, "twilio"): TWILIO_ANSWERS,
    (Channel.WHATSAPP, "twilio"): {**TWILIO_ANSWERS, F.PERMANENT: _twilio(63016, 400, "Outside the allowed window")},
    (Channel.WHATSAPP, "meta"): {
        F.RETRYABLE: _meta(131000, 500, "Something went wrong"),
        F.THROTTLED: _meta(130429, 400, "Rate limit hit"),
        F.PROVIDER_DOWN: _meta(190, 401, "Invalid OAuth access token"),
        F.PERMANENT: _meta(131047, 400, "Re-engagement message"),
        F.BAD_RECIPIENT: _meta(131026, 400, f"Message undeliverable to {PHONE[1:]}"),
    },
    (Channel.PUSH, "fcm"): {
        F.RETRYABLE: _fcm(503, "UNAVAILABLE"),
        F.THROTTLED: _fcm(429, "QUOTA_EXCEEDED"),
        F.PROVIDER_DOWN: _fcm(403, "PERMISSION_DENIED"),
        F.PERMANENT: _fcm(400, "INVALID_ARGUMENT"),
        F.BAD_RECIPIENT: _fcm(404, "UNREGISTERED"),
    },
    (Channel.PUSH, "apns"): {
        F.RETRYABLE: _apns(503, "ServiceUnavailable"),
        F.THROTTLED: _apns(429, "TooManyRequests"),
        F.PROVIDER_DOWN: _apns(403, "InvalidProviderToken"),
        F.PERMANENT: _apns(400, "BadCollapseId"),
        F.BAD_RECIPIENT: _apns(410, "Unregistered"),
    },
}
#: Failures found before any request: a message that cannot go as addressed.
LOCAL_FAILURES: dict[Key, Mapping[FailureClass, Callable[[OutboundMessage], OutboundMessage]]] = {
    (Channel.EMAIL, "ses"): {F.BAD_RECIPIENT: lambda m: replace(m, to=Address(email="nobody"))},
}
INBOX_FAILURES = frozenset({F.PERMANENT, F.PROVIDER_DOWN, F.RETRYABLE})


def failure_classes(key: Key) -> frozenset[FailureClass]:
    """What the contract suite asks of ``key``, known before any emulator starts (test parameters)."""
    if key == (Channel.INAPP, "store"):
        return INBOX_FAILURES
    return frozenset(ANSWERS.get(key, {})) | frozenset(LOCAL_FAILURES.get(key, {}))


def _network(key: Key, env: dict[str, str], timeout: str, unreachable: dict[str, str], **kw: Any) -> dict[str, Any]:
    return {
        "key": key,
        "env": env,
        "timeout_var": timeout,
        "unreachable_env": unreachable,
        "answers": ANSWERS[key],
        "local_failures": LOCAL_FAILURES.get(key, {}),
        **kw,
    }


def contract_cases(fakes: AllFakes, tmp: Path) -> dict[Key, Case]:
    """Every registry entry's case, against the session's emulators."""
    env = dict(fakes.env)
    sid, token = env["HERALD_TWILIO_ACCOUNT_SID"], env["HERALD_TWILIO_AUTH_TOKEN"]
    twilio_secrets = (token, base64.b64encode(f"{sid}:{token}".encode()).decode())
    aws_env = {**env, "AWS_SECRET_ACCESS_KEY": AWS_SECRET}
    closed = "127.0.0.1:9"  # the discard port: nothing listens
    cases: list[Case] = [
        ConsoleCase((Channel.EMAIL, "console"), {"HERALD_DATA_DIR": str(tmp / "console")}),
        ConsoleCase((Channel.SMS, "console"), {"HERALD_DATA_DIR": str(tmp / "console")}),
        *(SinkCase((channel, "sink"), {}) for channel in Channel),
        InboxCase((Channel.INAPP, "store"), {}),
        AwsCase(
            **_network(
                (Channel.EMAIL, "ses"), aws_env, "HERALD_SES_TIMEOUT_S", {"HERALD_SES_ENDPOINT_URL": f"http://{closed}"}
            ),
            secrets=(AWS_SECRET,),
            fakes=fakes,
        ),
        AwsCase(
            **_network(
                (Channel.SMS, "sns"), aws_env, "HERALD_SNS_TIMEOUT_S", {"HERALD_SNS_ENDPOINT_URL": f"http://{closed}"}
            ),
            secrets=(AWS_SECRET,),
            fakes=fakes,
        ),
        SmtpCase(
            **_network((Channel.EMAIL, "smtp"), env, "HERALD_SMTP_TIMEOUT_S", {"HERALD_SMTP_PORT": "9"}),
            secrets=(env["HERALD_SMTP_PASSWORD"],),
            fakes=fakes,
        ),
        HttpCase(
            **_network(
                (Channel.EMAIL, "sendgrid"),
                env,
                "HERALD_SENDGRID_TIMEOUT_S",
                {"HERALD_SENDGRID_BASE_URL": f"http://{closed}"},
            ),
            secrets=(env["HERALD_SENDGRID_API_KEY"],),
            emulator=fakes.sendgrid.emulator,
        ),
        *(
            HttpCase(
                **_network(
                    (channel, "twilio"), env, "HERALD_TWILIO_TIMEOUT_S", {"HERALD_TWILIO_BASE_URL": f"http://{closed}"}
                ),
                secrets=twilio_secrets,
                emulator=fakes.twilio.emulator,
            )
            for channel in (Channel.SMS, Channel.WHATSAPP)
        ),
        HttpCase(
            **_network(
                (Channel.WHATSAPP, "meta"), env, "HERALD_META_TIMEOUT_S", {"HERALD_META_BASE_URL": f"http://{closed}"}
            ),
            secrets=(env["HERALD_META_TOKEN"],),
            emulator=fakes.meta.emulator,
        ),
        HttpCase(
            **_network((Channel.PUSH, "fcm"), env, "HERALD_FCM_TIMEOUT_S", {"HERALD_FCM_BASE_URL": f"http://{closed}"}),
            secrets=(_private_key_line(env["HERALD_FCM_CREDENTIALS_FILE"]), "ya29.emu-"),
            emulator=fakes.fcm.emulator,
            path="messages:send",
        ),
        HttpCase(
            **_network(
                (Channel.PUSH, "apns"), env, "HERALD_APNS_TIMEOUT_S", {"HERALD_APNS_BASE_URL": f"https://{closed}"}
            ),
            secrets=(_key_line(env["HERALD_APNS_KEY_FILE"]), "eyJ"),
            emulator=fakes.apns.emulator,
        ),
    ]
    return {case.key: case for case in cases}


def _key_line(path: str) -> str:
    """A line from the middle of a PEM key file: what would show if the key leaked."""
    lines = Path(path).read_text().splitlines()
    return lines[len(lines) // 2]


def _private_key_line(credentials_file: str) -> str:
    import json

    pem = json.loads(Path(credentials_file).read_text())["private_key"]
    lines = pem.splitlines()
    return str(lines[len(lines) // 2])
