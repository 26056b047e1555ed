"""Active health checks on the health board, on a fake clock: an account breaker opens with no traffic,
goes half-open after its cool-down, and the next check (its probe) closes or reopens it; routing leaves
the platform's account alone meanwhile, and one tenant's own credentials are not affected."""

from __future__ import annotations

from typing import ClassVar

from engine.channels import Channel
from engine.delivery import health_checked
from engine.errors import ProviderDownError, RetryableError
from engine.routing import (
    ACCOUNT_REGION,
    PLATFORM,
    BreakerKey,
    BreakerPolicy,
    BreakerState,
    CheckResult,
    HealthBoard,
    RoutePlan,
    RouteQuery,
    parse_table,
    plan_route,
)
from engine.routing.checks import ProviderChecker
from tests.engine.test_routing_health import Clock

POLICY = BreakerPolicy(cooldown_s=30, check_failures=2)
ACCOUNT = BreakerKey("twilio", "sms", ACCOUNT_REGION, PLATFORM)
TABLE = parse_table(
    """
version: checks
channels:
  sms:
    twilio: {prices: {"*": 0.008}, reliability: 0.999, breaker: {check_s: 10}}
    sns: {prices: {"*": 0.006}, reliability: 0.99, breaker: {check_s: 0}}
""",
    source="test",
)


class Account:
    """A driver with a health check that answers what the test says."""

    provider: ClassVar[str] = "twilio"
    channel: ClassVar[Channel] = Channel.SMS

    def __init__(self) -> None:
        self.failing: Exception | None = None
        self.checks = 0

    async def check_health(self) -> None:
        self.checks += 1
        if self.failing is not None:
            raise self.failing

    async def aclose(self) -> None:
        pass


def down() -> ProviderDownError:
    return ProviderDownError("Authenticate", provider="twilio", code="20003", status_code=401)


def query(**kw: object) -> RouteQuery:
    base: dict[str, object] = {
        "channel": Channel.SMS,
        "tenant": "acme",
        "region": "eu",
        "destination": "GB",
        "category": "auth",
        "priority": "normal",
        "configured": ("twilio", "sns"),
    }
    return RouteQuery(**{**base, **kw})  # type: ignore[arg-type]


def chosen(plan: RoutePlan) -> str | None:
    return plan.chosen.provider if plan.chosen else None


def test_failed_checks_open_the_account_breaker_with_no_traffic_and_a_passing_probe_closes_it() -> None:
    clock = Clock()
    board = HealthBoard(lambda c, p: POLICY, clock)
    fail = CheckResult("sms", "twilio", clock(), down())
    assert board.record_checks([fail]) == []  # one failed check is not an outage
    (change,) = board.record_checks([fail])
    assert (change.key, change.after) == (ACCOUNT, BreakerState.OPEN)
    health = board.snapshot().get(ACCOUNT)
    assert health is not None and health.last_error == "health check: provider_down 20003: Authenticate"
    assert board.snapshot().circuit_gauges() == {("twilio", "sms"): 1.0}
    clock.advance(30)
    assert board.state(ACCOUNT) is BreakerState.HALF_OPEN
    (change,) = board.record_checks([CheckResult("sms", "twilio", clock())])
    assert change.after is BreakerState.CLOSED
    assert board.snapshot().circuit_gauges() == {("twilio", "sms"): 0.0}


def test_a_failing_probe_reopens_and_a_success_in_between_resets_the_run() -> None:
    clock = Clock()
    board = HealthBoard(lambda c, p: POLICY, clock)
    ok, fail = CheckResult("sms", "twilio", clock()), CheckResult("sms", "twilio", clock(), down())
    board.record_checks([fail, ok, fail])
    assert board.state(ACCOUNT) is BreakerState.CLOSED
    board.record_checks([fail])
    clock.advance(30)
    (change,) = board.record_checks([fail])
    assert (change.before, change.after) == (BreakerState.HALF_OPEN, BreakerState.OPEN)


def test_routing_skips_the_platform_account_while_its_breaker_is_not_closed_but_not_a_tenants_own() -> None:
    clock = Clock()
    board = HealthBoard(TABLE.breaker_policy, clock)
    board.record_checks([CheckResult("sms", "twilio", clock(), down())] * 2)
    plan = plan_route(query(), TABLE, board.snapshot(), now=clock())
    twilio = next(c for c in plan.candidates if c.provider == "twilio")
    assert chosen(plan) == "sns" and not twilio.usable and "health check" in twilio.reason
    clock.advance(30)  # half-open: the next check decides, traffic still waits for it
    assert chosen(plan_route(query(), TABLE, board.snapshot(), now=clock())) == "sns"
    own = plan_route(query(own_credentials=frozenset({"twilio"})), TABLE, board.snapshot(), now=clock())
    assert chosen(own) == "twilio"  # the tenant's own account is not the one the check failed on


async def test_the_checker_runs_due_checks_on_the_tables_interval_and_probes_at_once_when_half_open() -> None:
    clock = Clock()
    board = HealthBoard(TABLE.breaker_policy, clock)
    account, other = Account(), Account()
    assert health_checked(account) is account  # type: ignore[arg-type]
    checker = ProviderChecker(
        board,
        {(Channel.SMS, "twilio"): account, (Channel.SMS, "sns"): other},  # type: ignore[dict-item]
        default_s=60,
        clock=clock,
    )
    await checker.run_due()
    assert (account.checks, other.checks) == (1, 0)  # sns: check_s 0 in the table turns it off
    clock.advance(5)
    await checker.run_due()
    assert account.checks == 1  # not due before check_s (10)
    account.failing = RetryableError("Internal Server Error", code="500", status_code=500)
    clock.advance(10)
    await checker.run_due()
    clock.advance(10)
    (change,) = await checker.run_due()
    assert change.after is BreakerState.OPEN and account.checks == 3
    account.failing = None
    clock.advance(29)
    await checker.run_due()  # due by interval, but the breaker ignores results while it cools down
    assert board.state(ACCOUNT) is BreakerState.OPEN
    clock.advance(1)  # half-open now: checked at once, before its interval is up
    (change,) = await checker.run_due()
    assert change.after is BreakerState.CLOSED and account.checks == 5


async def test_a_check_that_hangs_or_raises_a_bug_counts_as_failed() -> None:
    clock = Clock()
    board = HealthBoard(lambda c, p: POLICY, clock)

    class Hangs(Account):
        async def check_health(self) -> None:
            import asyncio

            await asyncio.sleep(5)

    broken = Account()
    broken.failing = KeyError("status")
    checker = ProviderChecker(
        board,
        {(Channel.SMS, "twilio"): Hangs(), (Channel.EMAIL, "sendgrid"): broken},  # type: ignore[dict-item]
        default_s=1,
        timeout_s=0.05,
        clock=clock,
    )
    await checker.run_due()
    clock.advance(1)
    changes = await checker.run_due()
    assert {(c.key.provider, c.after) for c in changes} == {
        ("twilio", BreakerState.OPEN),
        ("sendgrid", BreakerState.OPEN),
    }
    errors = {k.provider: h.last_error for k, h in board.snapshot().keys.items()}
    assert "took over" in str(errors["twilio"]) and "KeyError" in str(errors["sendgrid"])
