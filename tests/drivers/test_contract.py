"""The driver contract, run against every driver in the registry and its emulator.

Success, each failure class the provider can answer, one answer for transport errors, a provider-wide
outage in the middle of a batch, and no secret or address in DEBUG logs. The cases are in
``contract.py``; a registry entry without one fails here.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

import pytest

from drivers import REGISTRY
from drivers.fakes import AllFakes
from engine.delivery import SendResult
from engine.errors import FailureClass, NotAttemptedError, ProviderDownError, RetryableError, ThrottledError
from engine.redaction import RedactingFilter
from tests.drivers.contract import ANSWERS, Case, Key, NetworkCase, contract_cases, failure_classes

ALL: list[Key] = sorted(REGISTRY)
#: Drivers whose emulator answers over the network: outages, timeouts and unreachable hosts apply.
NETWORK: list[Key] = [k for k in ALL if k in ANSWERS]


def key_id(key: Key) -> str:
    return f"{key[0].value}-{key[1]}"


@pytest.fixture(scope="session")
def cases(fakes: AllFakes, tmp_path_factory: pytest.TempPathFactory) -> dict[Key, Case]:
    return contract_cases(fakes, tmp_path_factory.mktemp("contract"))


@pytest.fixture
def case(request: pytest.FixtureRequest, cases: dict[Key, Case], fakes: AllFakes) -> Case:
    key: Key = request.param
    found = cases.get(key)
    if found is None:
        pytest.fail(f"{key_id(key)} is registered but has no contract case in tests/drivers/contract.py")
    fakes.reset()
    found.reset()
    return found


@pytest.fixture(autouse=True)
async def _close_drivers(cases: dict[Key, Case]) -> AsyncIterator[None]:
    yield
    for case in cases.values():
        for driver in case.built:
            await driver.aclose()
        case.built.clear()


def test_every_registered_driver_has_a_case(cases: dict[Key, Case]) -> None:
    assert sorted(cases) == ALL


@pytest.mark.parametrize("case", ALL, ids=key_id, indirect=True)
async def test_success(case: Case) -> None:
    driver = case.driver()
    results = await driver.send_batch([case.message(1), case.message(2)])
    assert [r.message_id for r in results] == ["msg_0001", "msg_0002"]
    assert all(r.ok and r.attempted and r.provider == case.provider and r.provider_message_id for r in results)
    assert case.seen() == 2


@pytest.mark.parametrize(
    ("case", "kind"),
    [(key, kind) for key in ALL for kind in sorted(failure_classes(key))],
    ids=lambda v: key_id(v) if isinstance(v, tuple) else str(v),
    indirect=["case"],
)
async def test_each_failure_class_is_a_result(case: Case, kind: FailureClass) -> None:
    instead = case.arrange(kind)
    [result] = await case.driver().send_batch([instead or case.message(1)])
    assert result.error is not None, "the failure must be a result, not a success"
    assert result.error.failure_class is kind and result.error.provider == case.provider
    assert result.attempted
    if kind is FailureClass.THROTTLED:
        assert isinstance(result.error, ThrottledError) and result.error.retry_after_s


@pytest.mark.parametrize("case", NETWORK, ids=key_id, indirect=True)
async def test_mid_batch_outage_stops_new_sends_and_keeps_outcomes(case: Case) -> None:
    assert isinstance(case, NetworkCase)
    case.outage(after=2)
    driver = case.driver()
    driver.concurrency = 1  # type: ignore[misc]  # one send at a time: which ones start is then certain
    results = await driver.send_batch([case.message(n) for n in range(1, 6)])
    assert [r.message_id for r in results] == [f"msg_{n:04d}" for n in range(1, 6)]
    assert [r.ok for r in results] == [True, True, False, False, False]
    assert isinstance(results[2].error, ProviderDownError) and results[2].attempted
    assert all(isinstance(r.error, NotAttemptedError) and not r.attempted for r in results[3:])
    assert all(r.provider_down for r in results[2:])
    assert case.seen() == 3  # the two accepted, the one refused; nothing after it


@pytest.mark.parametrize("case", NETWORK, ids=key_id, indirect=True)
async def test_unreachable_is_provider_down(case: Case) -> None:
    assert isinstance(case, NetworkCase)
    [result] = await case.driver(**case.unreachable_env).send_batch([case.message(1)])
    assert isinstance(result.error, ProviderDownError) and not isinstance(result.error, NotAttemptedError)
    assert result.error.provider == case.provider


@pytest.mark.parametrize("case", NETWORK, ids=key_id, indirect=True)
async def test_timeout_after_sending_is_retryable_on_the_same_provider(case: Case) -> None:
    assert isinstance(case, NetworkCase)
    case.slow(latency_ms=800)
    [result] = await case.driver(**{case.timeout_var: "0.25"}).send_batch([case.message(1)])
    assert isinstance(result.error, RetryableError) and result.error.sent_maybe
    assert not result.provider_down and result.error.code == "timeout"


@pytest.mark.parametrize("case", ALL, ids=key_id, indirect=True)
async def test_debug_logs_carry_no_secret_or_address(case: Case, caplog: pytest.LogCaptureFixture) -> None:
    caplog.handler.addFilter(RedactingFilter())  # as redaction.install() puts it on every root handler
    failing = next(
        (k for k in (FailureClass.BAD_RECIPIENT, FailureClass.PERMANENT) if k in failure_classes(case.key)), None
    )
    with caplog.at_level(logging.DEBUG):
        driver = case.driver()
        results: list[SendResult] = await driver.send_batch([case.message(1)])
        if failing is not None:
            instead = case.arrange(failing)
            results += await driver.send_batch([instead or case.message(2)])
    assert results[0].ok and (failing is None or not results[-1].ok)
    ours = [r for r in caplog.records if r.threadName == "MainThread"]  # not the emulators' own threads
    text = "\n".join(caplog.handler.format(r) for r in ours) + "\n".join(str(r.error) for r in results)
    for secret in (*case.secrets, *case.addresses()):
        assert secret not in text
