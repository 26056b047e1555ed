"""ApnsDriver against the APNs emulator: HTTP/2 over TLS (test CA), ES256 provider tokens, over loopback."""

from __future__ import annotations

import json
import logging
import ssl
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from drivers import create_driver
from drivers.fakes.apns import ApnsEmulator
from drivers.push.apns import ApnsDriver, ApnsSettings
from engine.channels import Channel
from engine.delivery import Address, Content, OutboundMessage
from engine.errors import ConfigurationError, FailureClass, ProviderDownError

DEVICE = "a1" * 32
MESSAGE_UUID = "0190a5b8-7f3c-7cc3-9c1e-2b7d8e9f0a1b"


def push(i: int | str, token: str | None = DEVICE, *, priority: str = "normal", **kw: Any) -> OutboundMessage:
    content = Content(text="Order 1234 is on its way.", title="Order shipped", data={"order_id": "1234"})
    return OutboundMessage(
        f"msg_{i}",
        "t_001",
        Channel.PUSH,
        Address(device_token=token, push_platform="apns"),
        content,
        priority=priority,
        **kw,
    )


@pytest.fixture
def emu(apns_emu: ApnsEmulator) -> ApnsEmulator:
    return apns_emu


@pytest.fixture
async def driver(env: dict[str, str]) -> AsyncIterator[ApnsDriver]:
    async with ApnsDriver.from_env(env) as drv:
        yield drv


async def test_alert_over_http2(driver: ApnsDriver, emu: ApnsEmulator, env: dict[str, str]) -> None:
    [result] = await driver.send_batch([push(MESSAGE_UUID, priority="high")])
    assert result.ok and result.provider_message_id == MESSAGE_UUID  # our id as apns-id, echoed back
    [request] = emu.received
    assert request.http_version == "2" and request.path == f"/3/device/{DEVICE}"
    headers = request.headers
    assert headers["apns-topic"] == env["HERALD_APNS_TOPIC"] and headers["apns-push-type"] == "alert"
    assert headers["apns-priority"] == "10" and headers["apns-id"] == MESSAGE_UUID
    assert "apns-expiration" not in headers and "apns-collapse-id" not in headers
    assert json.loads(request.body) == {
        "order_id": "1234",
        "notification_id": f"msg_{MESSAGE_UUID}",
        "aps": {"alert": {"title": "Order shipped", "body": "Order 1234 is on its way."}},
    }


async def test_push_type_priority_expiration_collapse(
    driver: ApnsDriver, emu: ApnsEmulator, env: dict[str, str]
) -> None:
    options = {"push": {"push_type": "background", "collapse_id": "order_1234"}}
    voip = {"push": {"push_type": "voip", "aps": {"badge": 3}}}
    results = await driver.send_batch(
        [push(1, ttl_seconds=600, extra=options), push(2, priority="low"), push(3, extra=voip)]
    )
    assert all(r.ok for r in results), results
    by_id = {json.loads(r.body)["notification_id"]: r for r in emu.received}
    background = by_id["msg_1"]
    assert background.headers["apns-push-type"] == "background" and background.headers["apns-priority"] == "5"
    assert background.headers["apns-collapse-id"] == "order_1234"
    assert abs(int(background.headers["apns-expiration"]) - (time.time() + 600)) < 5  # absolute unix seconds
    assert json.loads(background.body)["aps"] == {"content-available": 1}
    assert by_id["msg_2"].headers["apns-priority"] == "5" and by_id["msg_2"].headers["apns-push-type"] == "alert"
    assert by_id["msg_3"].headers["apns-topic"] == env["HERALD_APNS_TOPIC"] + ".voip"
    assert json.loads(by_id["msg_3"].body)["aps"]["badge"] == 3


async def test_failure_classes_in_one_partial_batch(driver: ApnsDriver, emu: ApnsEmulator) -> None:
    dead = "b2" * 32
    emu.control({"unregistered": {dead: 1714644067512}})
    results = await driver.send_batch(
        [
            push(1),
            push(2, dead),  # 410 Unregistered + timestamp
            push(3, "not-hex"),  # 400 BadDeviceToken
            push(4, None),  # no token: never sent
            push(5, extra={"push": {"aps": {"big": "x" * 5000}}}),  # over 4 KB: refused locally
            push(6, extra={"push": {"push_type": "nonsense"}}),  # bad option
        ]
    )
    got = [(r.error.failure_class, r.error.code) if r.error else None for r in results]
    assert got == [
        None,
        (FailureClass.BAD_RECIPIENT, "Unregistered"),
        (FailureClass.BAD_RECIPIENT, "BadDeviceToken"),
        (FailureClass.BAD_RECIPIENT, "missing_token"),
        (FailureClass.PERMANENT, "PayloadTooLarge"),
        (FailureClass.PERMANENT, "bad_push_options"),
    ]
    assert results[1].error is not None and results[1].error.invalid_since_ms == 1714644067512  # type: ignore[attr-defined]
    assert len(emu.received) == 3


@pytest.mark.parametrize(
    ("status", "reason", "expected", "retry_after"),
    [
        (429, "TooManyRequests", FailureClass.THROTTLED, 60.0),
        (503, "ServiceUnavailable", FailureClass.RETRYABLE, 30.0),
        (500, "InternalServerError", FailureClass.RETRYABLE, None),
        (400, "BadCollapseId", FailureClass.PERMANENT, None),
    ],
)
async def test_apns_reasons(
    driver: ApnsDriver, emu: ApnsEmulator, status: int, reason: str, expected: FailureClass, retry_after: float | None
) -> None:
    emu.fail(status, {"reason": reason})
    [result] = await driver.send_batch([push(1)])
    assert result.error is not None and (result.error.failure_class, result.error.code) == (expected, reason)
    assert getattr(result.error, "retry_after_s", None) == retry_after


async def test_auth_failures_are_provider_down(env: dict[str, str], tmp_path: Path) -> None:
    other = tmp_path / "other.p8"
    other.write_bytes(
        ec.generate_private_key(ec.SECP256R1()).private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    async with ApnsDriver.from_env({**env, "HERALD_APNS_KEY_FILE": str(other)}) as drv:
        results = await drv.send_batch([push(1), push(2)])
    assert all(isinstance(r.error, ProviderDownError) for r in results)
    assert results[0].error is not None
    assert (results[0].error.code, results[0].error.status_code) == ("InvalidProviderToken", 403)
    async with ApnsDriver.from_env({**env, "HERALD_APNS_TOPIC": "com.example.other"}) as drv:
        [result] = await drv.send_batch([push(1)])
    assert isinstance(result.error, ProviderDownError) and result.error.code == "BadTopic"


async def test_provider_token_is_reused_then_refreshed(env: dict[str, str], emu: ApnsEmulator) -> None:
    now = [time.time() - 31 * 60]  # signed 31 minutes ago: still accepted (< 1 h), due for renewal at 30
    async with ApnsDriver(ApnsSettings.from_env(env), clock=lambda: now[0]) as drv:
        assert all(r.ok for r in await drv.send_batch([push(1), push(2)]))
        assert drv.token.signed == 1
        now[0] = time.time()
        assert (await drv.send_batch([push(3)]))[0].ok
        assert drv.token.signed == 2
    assert len(emu.api.state.provider_tokens) == 2  # two distinct JWTs reached APNs


async def test_expired_provider_token_is_renewed_once(env: dict[str, str], emu: ApnsEmulator) -> None:
    times = iter([time.time() - 3700])  # the first token is over an hour old for APNs

    def clock() -> float:
        return next(times, time.time())

    async with ApnsDriver(ApnsSettings.from_env(env), clock=clock) as drv:
        [result] = await drv.send_batch([push(1)])
        assert result.ok and drv.token.signed == 2
    assert [r.path for r in emu.received] == [f"/3/device/{DEVICE}"] * 2
    emu.fail(403, {"reason": "ExpiredProviderToken"}, count=2)
    async with ApnsDriver.from_env(env) as drv:
        [result] = await drv.send_batch([push(2)])
    assert isinstance(result.error, ProviderDownError) and result.error.code == "ExpiredProviderToken"


async def test_untrusted_certificate_is_provider_down(env: dict[str, str]) -> None:
    untrusted = {k: v for k, v in env.items() if k != "HERALD_APNS_CA_FILE"}
    async with ApnsDriver.from_env(untrusted) as drv:
        [result] = await drv.send_batch([push(1)])
    assert isinstance(result.error, ProviderDownError) and result.error.code == "connect"


@pytest.mark.parametrize(
    "missing", ["HERALD_APNS_KEY_FILE", "HERALD_APNS_KEY_ID", "HERALD_APNS_TEAM_ID", "HERALD_APNS_TOPIC"]
)
def test_missing_setting_names_the_variable(env: dict[str, str], missing: str) -> None:
    del env[missing]
    with pytest.raises(ConfigurationError, match=missing):
        create_driver(Channel.PUSH, "apns", env)


def test_bad_key_file(env: dict[str, str], tmp_path: Path) -> None:
    junk = tmp_path / "junk.p8"
    junk.write_text("not a key")
    with pytest.raises(ConfigurationError, match="HERALD_APNS_KEY_FILE"):
        create_driver(Channel.PUSH, "apns", {**env, "HERALD_APNS_KEY_FILE": str(junk)})
    assert "PRIVATE" not in repr(ApnsSettings.from_env(env))


async def test_no_secret_or_token_in_logs(
    driver: ApnsDriver, emu: ApnsEmulator, env: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    dead = "b2" * 32
    emu.control({"unregistered": {dead: None}})
    results = await driver.send_batch([push(1), push(2, dead), push(3, "c3" * 32)])
    assert [r.ok for r in results] == [True, False, True]
    ours = [r for r in caplog.records if not r.threadName.startswith("fake-")]
    text = "\n".join(f"{r.getMessage()} {r.__dict__}" for r in ours) + repr([r.error for r in results])
    assert "HTTP Request" in text  # httpx logged the requests, with the device token masked
    key_line = Path(env["HERALD_APNS_KEY_FILE"]).read_text().splitlines()[1]
    for secret in (DEVICE, dead, "c3" * 32, key_line, *emu.api.state.provider_tokens, "eyJ"):
        assert secret not in text


async def test_aioapns_against_the_emulator(env: dict[str, str], emu: ApnsEmulator) -> None:
    """aioapns keeps the host in a protocol class attribute: a subclass points it at the emulator."""
    from aioapns import APNs, NotificationRequest, PushType
    from aioapns.connection import APNsProductionClientProtocol

    class EmulatorProtocol(APNsProductionClientProtocol):
        APNS_SERVER = "127.0.0.1"
        APNS_PORT = int(env["HERALD_APNS_BASE_URL"].rsplit(":", 1)[1])

    context = ssl.create_default_context(cafile=env["HERALD_APNS_CA_FILE"])
    context.set_alpn_protocols(["h2"])
    client = APNs(
        key=Path(env["HERALD_APNS_KEY_FILE"]).read_text(),
        key_id=env["HERALD_APNS_KEY_ID"],
        team_id=env["HERALD_APNS_TEAM_ID"],
        topic=env["HERALD_APNS_TOPIC"],
        ssl_context=context,
    )
    client.pool.protocol_class = EmulatorProtocol
    ok = await client.send_notification(
        NotificationRequest(device_token=DEVICE, message={"aps": {"alert": "hi"}}, push_type=PushType.ALERT)
    )
    assert ok.is_successful, ok.description
    emu.control({"unregistered": {DEVICE: 1714644067512}})
    gone = await client.send_notification(
        NotificationRequest(device_token=DEVICE, message={"aps": {"alert": "hi"}}, notification_id=str(uuid.uuid4()))
    )
    assert (gone.status, gone.description, gone.timestamp) == ("410", "Unregistered", 1714644067512)
