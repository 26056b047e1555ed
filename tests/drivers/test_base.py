"""BaseDriver.send_batch: one result per message, and a provider-wide failure stops new sends only."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import ClassVar, Self

from drivers.base import BaseDriver
from engine.channels import Channel
from engine.delivery import Address, Content, OutboundMessage, SendResult
from engine.errors import NotAttemptedError, ProviderDownError, RetryableError


def msg(n: int) -> OutboundMessage:
    return OutboundMessage(f"msg_{n}", "t_001", Channel.EMAIL, Address(email=f"u{n}@example.com"), Content(text="x"))


class GatedDriver(BaseDriver):
    """Each send waits until the test opens its gate, then answers what the test scripted."""

    provider: ClassVar[str] = "gated"
    channel: ClassVar[Channel] = Channel.EMAIL
    concurrency: ClassVar[int] = 3

    def __init__(self, outcomes: Mapping[str, BaseException | None]) -> None:
        self.outcomes = outcomes
        self.gates: dict[str, asyncio.Event] = {}
        self.started: list[str] = []

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Self:
        return cls({})

    def gate(self, message_id: str) -> asyncio.Event:
        return self.gates.setdefault(message_id, asyncio.Event())

    async def send_one(self, message: OutboundMessage) -> SendResult:
        self.started.append(message.message_id)
        await self.gate(message.message_id).wait()
        outcome = self.outcomes.get(message.message_id)
        if outcome is not None:
            raise outcome
        return SendResult(message.message_id, self.provider, provider_message_id=f"p-{message.message_id}")


async def until(condition: object) -> None:
    for _ in range(100):
        if callable(condition) and condition():
            return
        await asyncio.sleep(0)
    raise AssertionError("condition never held")


async def test_in_flight_sends_finish_and_keep_their_outcomes_after_an_outage() -> None:
    down = ProviderDownError("account paused", provider="gated", code="paused")
    driver = GatedDriver({"msg_1": down, "msg_3": RetryableError("503", provider="gated")})
    batch = asyncio.create_task(driver.send_batch([msg(n) for n in range(1, 7)]))
    await until(lambda: len(driver.started) == 3)
    driver.gate("msg_1").set()  # the provider goes down while msg_2 and msg_3 are in flight
    await until(lambda: True)
    driver.gate("msg_2").set()
    driver.gate("msg_3").set()
    results = await asyncio.wait_for(batch, 2)
    assert driver.started == ["msg_1", "msg_2", "msg_3"]  # nothing started after the outage was seen
    assert [r.message_id for r in results] == [f"msg_{n}" for n in range(1, 7)]
    assert results[0].error is down and results[0].attempted
    assert results[1].ok and results[1].provider_message_id == "p-msg_2"
    assert isinstance(results[2].error, RetryableError) and not results[2].provider_down
    for result in results[3:]:
        assert isinstance(result.error, NotAttemptedError) and not result.attempted and result.provider_down
        assert result.error.code == "paused" and result.provider == "gated"


async def test_an_escaped_socket_error_is_a_result_not_a_crash() -> None:
    driver = GatedDriver({"msg_1": OSError("odd"), "msg_3": ConnectionRefusedError()})
    for n in (1, 2, 3):
        driver.gate(f"msg_{n}").set()
    odd, fine = await driver.send_batch([msg(1), msg(2)])
    assert isinstance(odd.error, RetryableError) and odd.error.sent_maybe  # unknown: retried where it was
    assert fine.ok
    [refused] = await driver.send_batch([msg(3)])
    assert isinstance(refused.error, ProviderDownError) and refused.error.code == "connect"


async def test_empty_batch() -> None:
    assert await GatedDriver({}).send_batch([]) == []
