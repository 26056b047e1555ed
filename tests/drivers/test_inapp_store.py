"""In-app driver: stores for to.user_id through the InboxStore port, one put per batch, idempotent."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import pytest

from drivers import create_driver
from drivers.base import DriverServices
from drivers.inapp.store import InappDriver, MemoryInboxStore
from engine.channels import Channel
from engine.delivery import Address, Content, InboxItem, InboxStore, OutboundMessage
from engine.errors import ConfigurationError, FailureClass, ProviderDownError, RetryableError

NOW = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)


def msg(
    i: int,
    *,
    user: str | None = "u_42",
    text: str = "Your order shipped",
    ttl: int | None = None,
    title: str | None = "Order",
) -> OutboundMessage:
    return OutboundMessage(
        message_id=f"msg_{i}",
        tenant="t_001",
        channel=Channel.INAPP,
        to=Address(user_id=user),
        content=Content(text=text, title=title, data={"order": "1234"}),
        template_id="order_shipped:v1",
        locale="en-GB",
        category="transactional",
        ttl_seconds=ttl,
    )


class CountingStore(MemoryInboxStore):
    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    async def put(self, items: Sequence[InboxItem]) -> None:
        self.calls += 1
        await super().put(items)


class BrokenStore:
    def __init__(self, error: BaseException) -> None:
        self.error = error

    async def put(self, items: Sequence[InboxItem]) -> None:
        raise self.error


async def test_stores_for_the_recipient_with_one_put_per_batch() -> None:
    store = CountingStore()
    driver = InappDriver(store, clock=lambda: NOW)
    results = await driver.send_batch([msg(1), msg(2, ttl=3600), msg(3, user="u_7")])
    assert [r.ok for r in results] == [True, True, True]
    assert [r.provider_message_id for r in results] == ["msg_1", "msg_2", "msg_3"]
    assert store.calls == 1
    inbox = store.inbox("t_001", "u_42")
    assert [i.message_id for i in inbox] == ["msg_2", "msg_1"]  # newest first
    assert inbox[0].expires_at == NOW + timedelta(hours=1) and inbox[1].expires_at is None
    assert inbox[1].title == "Order" and inbox[1].body == "Your order shipped" and inbox[1].data == {"order": "1234"}
    assert [i.message_id for i in store.inbox("t_001", "u_7")] == ["msg_3"]
    assert isinstance(store, InboxStore)


async def test_redelivery_does_not_duplicate() -> None:
    store = MemoryInboxStore()
    driver = InappDriver(store)
    await driver.send_batch([msg(1)])
    await driver.send_batch([msg(1), msg(2)])
    assert sorted(i.message_id for i in store.inbox("t_001", "u_42")) == ["msg_1", "msg_2"]


async def test_partial_failures_are_per_message_results() -> None:
    store = MemoryInboxStore()
    results = await InappDriver(store).send_batch([msg(1), msg(2, user=None), msg(3, text="  ", title=None)])
    assert results[0].ok
    assert results[1].error is not None and results[1].error.code == "missing_user_id"
    assert results[1].error.failure_class is FailureClass.PERMANENT
    assert results[2].error is not None and results[2].error.code == "empty_body"
    assert [i.message_id for i in store.inbox("t_001", "u_42")] == ["msg_1"]


async def test_store_outage_fails_every_stored_message_alike() -> None:
    """One put per batch: the whole batch is provider-wide when the store refuses the connection, and
    retryable in place when the write timed out (it may have landed; storing again is a no-op)."""
    refused = BrokenStore(ConnectionRefusedError("database down"))
    down = await InappDriver(refused).send_batch([msg(1), msg(2, user=None)])
    assert isinstance(down[0].error, ProviderDownError) and down[0].provider_down
    assert down[1].error is not None and down[1].error.code == "missing_user_id"  # its own outcome stays
    [slow] = await InappDriver(BrokenStore(TimeoutError())).send_batch([msg(1)])
    assert isinstance(slow.error, RetryableError) and slow.error.sent_maybe


def test_the_store_is_handed_in_never_named_by_a_setting() -> None:
    with pytest.raises(ConfigurationError, match="inbox storage"):
        create_driver(Channel.INAPP, "store", {})
    with pytest.raises(ConfigurationError, match="inbox storage"):
        create_driver(Channel.INAPP, "store", {"HERALD_INAPP_STORE": "engine.storage.inbox:from_env"})
    store = CountingStore()
    driver = create_driver(Channel.INAPP, "store", {}, DriverServices(inbox=store))
    assert isinstance(driver, InappDriver) and driver.store is store


async def test_nothing_personal_in_logs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    await InappDriver(MemoryInboxStore()).send_batch([msg(1, text="secret body 998877")])
    assert "998877" not in caplog.text and "u_42" not in caplog.text


async def test_an_item_expires_with_its_message_not_a_part_second_earlier() -> None:
    store = MemoryInboxStore()
    expires = NOW + timedelta(seconds=2, milliseconds=986)  # what whole seconds of TTL left would round down
    from dataclasses import replace

    [result] = await InappDriver(store, clock=lambda: NOW).send_batch([replace(msg(1, ttl=2), expires_at=expires)])
    assert result.ok
    assert store.inbox("t_001", "u_42")[0].expires_at == expires
