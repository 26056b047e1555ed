"""FcmDriver against the FCM emulator (HTTP v1 + OAuth2 service-account token exchange) over loopback."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from drivers import create_driver
from drivers.fakes.fcm import FcmEmulator, FcmState
from drivers.push.fcm import FcmDriver, FcmSettings
from engine.channels import Channel
from engine.delivery import Address, Content, OutboundMessage
from engine.errors import ConfigurationError, FailureClass, ProviderDownError

TOKEN = "bk3RNwTe3H0:CI2k_HHwgIpoDKCIZvvDMExUdFQ3P1-EXAMPLE-0001"
FCM_ERR = "type.googleapis.com/google.firebase.fcm.v1.FcmError"


def push(i: int, token: str | None = TOKEN, *, priority: str = "normal", **kw: Any) -> OutboundMessage:
    content = Content(text="Order 1234 is on its way.", title="Order shipped", data={"order_id": "1234"})
    return OutboundMessage(
        f"msg_{i}",
        "t_001",
        Channel.PUSH,
        Address(device_token=token, push_platform="fcm"),
        content,
        priority=priority,
        **kw,
    )


def fcm_error(status: int, rpc: str, code: str) -> dict[str, Any]:
    return {
        "error": {"code": status, "message": "x", "status": rpc, "details": [{"@type": FCM_ERR, "errorCode": code}]}
    }


@pytest.fixture
def emu(fcm_emu: FcmEmulator) -> FcmEmulator:
    return fcm_emu


@pytest.fixture
async def driver(env: dict[str, str]) -> AsyncIterator[FcmDriver]:
    async with FcmDriver.from_env(env) as drv:
        yield drv


def sends(emu: FcmEmulator) -> list[dict[str, Any]]:
    return [r.body["message"] for r in emu.received if r.path.endswith("messages:send")]


async def test_success_with_oauth_exchange(driver: FcmDriver, emu: FcmEmulator) -> None:
    results = await driver.send_batch([push(1), push(2)])
    assert all(r.ok for r in results)
    assert all((r.provider_message_id or "").startswith("projects/herald-emulator/messages/") for r in results)
    assert [r.path for r in emu.received].count("/token") == 1  # one exchange for the batch
    token_request = next(r for r in emu.received if r.path == "/token")
    assert token_request.body["grant_type"] == "urn:ietf:params:oauth:grant-type:jwt-bearer"
    message = sends(emu)[0]
    assert message["token"] == TOKEN
    assert message["notification"] == {"title": "Order shipped", "body": "Order 1234 is on its way."}
    assert message["data"]["order_id"] == "1234" and message["data"]["notification_id"] in ("msg_1", "msg_2")
    assert message["android"] == {"priority": "normal"} and message["apns"]["headers"]["apns-priority"] == "5"


async def test_priority_ttl_collapse_and_overrides(driver: FcmDriver, emu: FcmEmulator) -> None:
    options = {
        "push": {
            "collapse_id": "order_1234",
            "push_type": "alert",
            "sound": "default",
            "badge": 2,
            "android": {"notification": {"channel_id": "orders"}},
            "webpush": {"fcm_options": {"link": "https://example.com/o/1234"}},
        }
    }
    [result] = await driver.send_batch([push(1, priority="high", ttl_seconds=3600, extra=options)])
    assert result.ok
    message = sends(emu)[0]
    assert message["android"] == {
        "priority": "high",
        "ttl": "3600s",
        "collapse_key": "order_1234",
        "notification": {"channel_id": "orders"},
    }
    headers = message["apns"]["headers"]
    assert headers["apns-priority"] == "10" and headers["apns-collapse-id"] == "order_1234"
    assert int(headers["apns-expiration"]) > time.time() + 3500  # absolute, not relative
    assert message["apns"]["payload"] == {"aps": {"sound": "default", "badge": 2}}
    assert message["webpush"]["headers"] == {"Urgency": "high", "TTL": "3600"}
    assert message["webpush"]["fcm_options"] == {"link": "https://example.com/o/1234"}


async def test_failure_classes_in_one_partial_batch(driver: FcmDriver, emu: FcmEmulator) -> None:
    emu.control({"unregistered": [TOKEN + "-dead"]})
    results = await driver.send_batch(
        [
            push(1),
            push(2, TOKEN + "-dead"),  # 404 UNREGISTERED
            push(3, "not a token!"),  # 400 INVALID_ARGUMENT on message.token
            push(4, None),  # no token: never sent
            push(5, extra={"push": {"android": {"ttl": "an hour"}}}),  # 400 INVALID_ARGUMENT, not the token
        ]
    )
    got = [(r.error.failure_class, r.error.code) if r.error else None for r in results]
    assert got == [
        None,
        (FailureClass.BAD_RECIPIENT, "UNREGISTERED"),
        (FailureClass.BAD_RECIPIENT, "INVALID_ARGUMENT"),
        (FailureClass.BAD_RECIPIENT, "missing_token"),
        (FailureClass.PERMANENT, "INVALID_ARGUMENT"),
    ]


@pytest.mark.parametrize(
    ("status", "rpc", "code", "headers", "expected", "retry_after"),
    [
        (429, "RESOURCE_EXHAUSTED", "QUOTA_EXCEEDED", {"Retry-After": "120"}, FailureClass.THROTTLED, 120.0),
        (429, "RESOURCE_EXHAUSTED", "QUOTA_EXCEEDED", {}, FailureClass.THROTTLED, 60.0),
        (503, "UNAVAILABLE", "UNAVAILABLE", {"Retry-After": "7"}, FailureClass.RETRYABLE, 7.0),
        (500, "INTERNAL", "INTERNAL", {}, FailureClass.RETRYABLE, None),
        (403, "PERMISSION_DENIED", "SENDER_ID_MISMATCH", {}, FailureClass.BAD_RECIPIENT, None),
    ],
)
async def test_fcm_codes(
    driver: FcmDriver,
    emu: FcmEmulator,
    status: int,
    rpc: str,
    code: str,
    headers: dict[str, str],
    expected: FailureClass,
    retry_after: float | None,
) -> None:
    emu.fail(status, fcm_error(status, rpc, code), path="messages:send", headers=headers)
    [result] = await driver.send_batch([push(1)])
    assert result.error is not None and (result.error.failure_class, result.error.code) == (expected, code)
    assert getattr(result.error, "retry_after_s", None) == retry_after


async def test_third_party_auth_error_is_provider_down(driver: FcmDriver, emu: FcmEmulator) -> None:
    emu.fail(401, fcm_error(401, "UNAUTHENTICATED", "THIRD_PARTY_AUTH_ERROR"), path="messages:send")
    [result] = await driver.send_batch([push(1)])
    assert isinstance(result.error, ProviderDownError) and result.error.code == "THIRD_PARTY_AUTH_ERROR"


async def test_refused_access_token_is_refreshed_once(driver: FcmDriver, emu: FcmEmulator) -> None:
    assert (await driver.send_batch([push(1)]))[0].ok
    emu.control({"revoke_tokens": True})  # the cached token is no longer valid at FCM
    [result] = await driver.send_batch([push(2)])
    assert result.ok
    assert driver.tokens.refreshes == 2
    statuses = [r.path for r in emu.received]
    assert statuses.count("/token") == 2 and statuses.count("/v1/projects/herald-emulator/messages:send") == 3


async def test_token_refreshed_before_expiry_without_a_401(env: dict[str, str], emu: FcmEmulator) -> None:
    now = [time.time()]
    async with FcmDriver(FcmSettings.from_env(env), clock=lambda: now[0]) as drv:
        assert (await drv.send_batch([push(1)]))[0].ok
        now[0] += 3600 - 200  # within the refresh margin of the one-hour token
        assert (await drv.send_batch([push(2)]))[0].ok
        assert drv.tokens.refreshes == 2
    assert [r.path for r in emu.received].count("/token") == 2
    assert len(sends(emu)) == 2  # no refused request in between


async def test_still_unauthenticated_after_refresh_is_provider_down(driver: FcmDriver, emu: FcmEmulator) -> None:
    refused = {
        "error": {
            "code": 401,
            "message": "Request had invalid authentication credentials.",
            "status": "UNAUTHENTICATED",
        }
    }
    emu.fail(401, refused, count=2, path="messages:send")
    [result] = await driver.send_batch([push(1)])
    assert isinstance(result.error, ProviderDownError) and result.error.code == "UNAUTHENTICATED"


async def test_token_exchange_refused_is_provider_down(env: dict[str, str], tmp_path: Path) -> None:
    foreign = FcmState()  # another service account's key: the emulator cannot verify its assertion
    creds = tmp_path / "other.json"
    creds.write_text(json.dumps(foreign.credentials_json(env["HERALD_FCM_TOKEN_URI"])))
    env["HERALD_FCM_CREDENTIALS_FILE"] = str(creds)
    async with FcmDriver.from_env(env) as drv:
        results = await drv.send_batch([push(1), push(2)])
    assert all(isinstance(r.error, ProviderDownError) for r in results)
    assert results[0].error is not None and results[0].error.code == "token"
    assert "invalid_grant" in results[0].error.detail


async def test_unreachable_token_endpoint_is_provider_down(env: dict[str, str]) -> None:
    env["HERALD_FCM_TOKEN_URI"] = "http://127.0.0.1:9/token"
    async with FcmDriver.from_env(env) as drv:
        [result] = await drv.send_batch([push(1)])
    assert isinstance(result.error, ProviderDownError) and result.error.code == "token"


def test_settings(env: dict[str, str], tmp_path: Path) -> None:
    for missing in ("HERALD_FCM_CREDENTIALS_FILE",):
        broken = {k: v for k, v in env.items() if k != missing}
        with pytest.raises(ConfigurationError, match=missing):
            create_driver(Channel.PUSH, "fcm", broken)
    with pytest.raises(ConfigurationError, match="HERALD_FCM_CREDENTIALS_FILE"):
        create_driver(Channel.PUSH, "fcm", {**env, "HERALD_FCM_CREDENTIALS_FILE": str(tmp_path / "absent.json")})
    info = json.loads(Path(env["HERALD_FCM_CREDENTIALS_FILE"]).read_text())
    no_project = tmp_path / "np.json"
    no_project.write_text(json.dumps({k: v for k, v in info.items() if k != "project_id"}))
    bare = {"HERALD_FCM_CREDENTIALS_FILE": str(no_project)}
    with pytest.raises(ConfigurationError, match="HERALD_FCM_PROJECT_ID"):
        create_driver(Channel.PUSH, "fcm", bare)
    settings = FcmSettings.from_env({"HERALD_FCM_CREDENTIALS_FILE": env["HERALD_FCM_CREDENTIALS_FILE"]})
    assert settings.project_id == "herald-emulator" and "PRIVATE KEY" not in repr(settings)


async def test_no_secret_or_token_in_logs(
    driver: FcmDriver, emu: FcmEmulator, env: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    logging.getLogger("google").setLevel(logging.DEBUG)
    emu.control({"unregistered": [TOKEN + "-dead"]})
    results = await driver.send_batch([push(1), push(2, TOKEN + "-dead")])
    emu.control({"revoke_tokens": True})
    results += await driver.send_batch([push(3)])
    access_tokens = [r for r in emu.api.state.access_tokens]
    assert access_tokens
    ours = [r for r in caplog.records if not r.threadName.startswith("fake-")]
    assert ours
    text = "\n".join(f"{r.getMessage()} {r.__dict__}" for r in ours) + repr([r.error for r in results])
    key = json.loads(Path(env["HERALD_FCM_CREDENTIALS_FILE"]).read_text())["private_key"]
    for secret in [*access_tokens, TOKEN, key.splitlines()[1], "eyJ"]:  # "eyJ": any JWT (the assertion)
        assert secret not in text


def test_firebase_admin_sdk_against_the_emulator(
    env: dict[str, str], emu: FcmEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """firebase-admin's FCM URL is a class constant: overriding it is enough to point the SDK here."""
    import firebase_admin
    from firebase_admin import credentials, messaging

    url = env["HERALD_FCM_BASE_URL"]
    monkeypatch.setattr(messaging._MessagingService, "FCM_URL", url + "/v1/projects/{0}/messages:send")
    app = firebase_admin.initialize_app(
        credentials.Certificate(env["HERALD_FCM_CREDENTIALS_FILE"]), name=f"emulator-{time.monotonic_ns()}"
    )
    try:
        name = messaging.send(
            messaging.Message(token=TOKEN, notification=messaging.Notification("Hi", "there"), data={"a": "1"}),
            app=app,
        )
        assert name.startswith("projects/herald-emulator/messages/")
        emu.control({"unregistered": [TOKEN]})
        with pytest.raises(messaging.UnregisteredError):
            messaging.send(messaging.Message(token=TOKEN), app=app)
    finally:
        firebase_admin.delete_app(app)
