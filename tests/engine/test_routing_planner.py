"""Candidate filtering, ranking by policy, explanations, and what each failure class leads to."""

from __future__ import annotations

import pytest

from engine.channels import Channel
from engine.errors import (
    BadRecipientError,
    DispatchError,
    PermanentError,
    ProviderDownError,
    RetryableError,
    ThrottledError,
)
from engine.routing import (
    PLATFORM,
    SHIPPED_TABLE,
    BreakerKey,
    BreakerState,
    HealthBoard,
    LocalFeed,
    Move,
    Planner,
    RouteQuery,
    TallyBuffer,
    allow_list,
    destination,
    email_region,
    load_table,
    next_move,
    parse_table,
    plan_route,
)
from engine.routing.static import StaticRoutes
from tests.engine.test_routing_health import POLICY, Clock

TABLE = load_table(SHIPPED_TABLE)


def sms(**kw: object) -> RouteQuery:
    base: dict[str, object] = {
        "channel": Channel.SMS,
        "tenant": "t_a",
        "region": "eu",
        "destination": "GB",
        "category": "transactional",
        "priority": "normal",
        "configured": ("console", "twilio", "sns"),
        "allow": ("twilio", "sns"),
    }
    return RouteQuery(**{**base, **kw})  # type: ignore[arg-type]


def names(plan) -> list[str]:  # type: ignore[no-untyped-def]
    return [c.provider for c in plan.usable]


def test_allow_list_accepts_the_spec_shape_and_the_bare_list() -> None:
    assert allow_list({"providers": {"sms": {"allow": ["sns", "twilio"]}}}, Channel.SMS) == ("sns", "twilio")
    assert allow_list({"providers": {"sms": ["twilio"]}}, Channel.SMS) == ("twilio",)
    assert allow_list({"providers": {"sms": []}}, Channel.SMS) is None
    assert allow_list({}, Channel.EMAIL) is None


def test_a_typed_tenant_config_is_read_as_well_as_the_stored_document() -> None:
    from types import SimpleNamespace

    from engine.routing.table import TenantRoutingDoc, parse_tenant_routing, tenant_routing_key

    routing = TenantRoutingDoc.model_validate({"email_region": "us", "channels": {"sms": {"sns": {"reliability": 1}}}})
    typed = SimpleNamespace(
        providers=SimpleNamespace(allowed=lambda channel: ("sns",) if channel is Channel.SMS else None),
        routing=routing,
    )
    assert allow_list(typed, Channel.SMS) == ("sns",) and allow_list(typed, Channel.EMAIL) is None
    assert email_region(typed, "eu") == "us" and email_region({}, "eu") == "eu"
    assert parse_tenant_routing(typed) is routing
    assert tenant_routing_key(typed) == tenant_routing_key({"routing": routing.model_dump(exclude_defaults=True)})


def test_destination_is_the_phone_numbers_country_or_the_email_region() -> None:
    assert destination(Channel.SMS, {"phone": "+447400123456"}, email_region_="eu") == "GB"
    assert destination(Channel.WHATSAPP, {"phone": "+12025550123"}, email_region_="eu") == "US"
    assert destination(Channel.SMS, {"phone": "+999"}, email_region_="eu") == "*"
    assert destination(Channel.EMAIL, {"email": "a@b.c"}, email_region_="eu") == "eu"


def test_transactional_ranks_by_reliability_and_marketing_by_cost() -> None:
    now = Clock()()
    auth = plan_route(sms(), TABLE, HealthBoard().snapshot(), now=now)
    marketing = plan_route(sms(category="marketing"), TABLE, HealthBoard().snapshot(), now=now)
    assert names(auth) == ["twilio", "sns"] and auth.rule.name == "reliable" and auth.rule.immediate_failover
    assert names(marketing) == ["sns", "twilio"] and not marketing.rule.immediate_failover
    assert "cost $0.040000" in marketing.chosen.reason  # type: ignore[union-attr]
    assert marketing.candidates[1].reason == "rank 2: cost $0.045000 vs $0.040000 for sns"
    high = plan_route(sms(category=None, priority="high"), TABLE, HealthBoard().snapshot(), now=now)
    assert high.rule.name == "urgent" and names(high) == ["twilio", "sns"]
    default = plan_route(sms(category=None, allow=("sns", "twilio")), TABLE, HealthBoard().snapshot(), now=now)
    assert default.rule.name == "default" and names(default) == ["sns", "twilio"]  # the tenant's order


def test_filters_say_why_and_only_static_ones_make_no_route() -> None:
    now = Clock()()
    table = parse_table("version: t\nchannels: {sms: {sns: {regions: [us]}}, push: {}}", source="t")
    plan = plan_route(sms(allow=("twilio", "sns", "mailgun")), table, HealthBoard().snapshot(), now=now)
    reasons = {c.provider: c.reason for c in plan.candidates if not c.usable}
    assert reasons == {
        "sns": "serves regions us, not the tenant's eu",
        "mailgun": "not configured for sms on this deployment",
        "console": "not in the tenant's allow-list",
    }
    assert names(plan) == ["twilio"] and not plan.no_route
    nothing = plan_route(sms(allow=("mailgun",)), table, HealthBoard().snapshot(), now=now)
    assert nothing.no_route and nothing.chosen is None
    push = RouteQuery(Channel.PUSH, "t_a", "eu", "*", None, "normal", ("fcm",), None, push_platform="apns")
    explained = plan_route(push, TABLE, HealthBoard().snapshot(), now=now)
    assert explained.no_route and explained.candidates[0].reason == "the device token is for apns"


def test_an_open_breaker_filters_for_now_and_half_open_probes() -> None:
    clock = Clock()
    board = HealthBoard(lambda c, p: POLICY, clock)
    buf = TallyBuffer()
    key = BreakerKey("twilio", "sms", "eu", PLATFORM)
    for _ in range(5):
        buf.result(key, clock(), RetryableError("boom", code="500"))
    board.apply(buf.drain())
    plan = plan_route(sms(), TABLE, board.snapshot(), now=clock())
    assert names(plan) == ["sns"] and not plan.no_route
    twilio = next(c for c in plan.candidates if c.provider == "twilio")
    assert twilio.health is BreakerState.OPEN and twilio.reason.startswith("breaker open (retryable 500")
    only_twilio = plan_route(sms(allow=("twilio",)), TABLE, board.snapshot(), now=clock())
    assert only_twilio.usable == () and not only_twilio.no_route  # waits for it, never "no route"
    clock.advance(30)
    probing = plan_route(sms(allow=("twilio",)), TABLE, board.snapshot(), now=clock())
    assert probing.chosen.health is BreakerState.HALF_OPEN  # type: ignore[union-attr]
    assert "probe" in probing.chosen.reason  # type: ignore[union-attr]
    # Its failures also lowered what it learned of twilio's reliability: sns now ranks first.
    assert names(plan_route(sms(), TABLE, board.snapshot(), now=clock())) == ["sns", "twilio"]


def test_learned_reliability_moves_the_ranking_and_own_credentials_have_their_own_key() -> None:
    clock = Clock()
    board = HealthBoard(lambda c, p: POLICY, clock)
    buf = TallyBuffer()
    key = BreakerKey("twilio", "sms", "eu", PLATFORM)
    for i in range(40):  # 20 % failures, never 5 in a row, below the breaker's error rate
        buf.result(key, clock(), RetryableError("x") if i % 5 == 0 else None)
    board.apply(buf.drain())
    plan = plan_route(sms(), TABLE, board.snapshot(), now=clock())
    assert names(plan) == ["sns", "twilio"]
    own = plan_route(sms(own_credentials=frozenset({"twilio"})), TABLE, board.snapshot(), now=clock())
    assert names(own) == ["twilio", "sns"] and own.chosen.owner == "t_a"  # type: ignore[union-attr]


def test_a_pinned_provider_goes_first() -> None:
    plan = plan_route(sms(category="marketing", pinned="twilio"), TABLE, HealthBoard().snapshot(), now=0)
    assert names(plan) == ["twilio", "sns"] and plan.chosen.reason.startswith("pinned")  # type: ignore[union-attr]


def test_a_dlq_replay_to_a_named_provider_routes_only_there() -> None:
    """``messages.pinned_provider``: whatever the policy ranks first, only the named provider is a
    candidate; the others are filtered for good (with the reason), routing on or skipped."""
    plan = plan_route(sms(only="sns"), TABLE, HealthBoard().snapshot(), now=0)  # reliability ranks twilio first
    assert names(plan) == ["sns"] and plan.chosen.reason == "pinned: the DLQ replay named it"  # type: ignore[union-attr]
    twilio = next(c for c in plan.candidates if c.provider == "twilio")
    assert twilio.excluded and twilio.reason == "the DLQ replay named sns" and not plan.no_route
    # the tenant's allow-list still applies: a provider it does not allow leaves no route
    assert plan_route(sms(only="console"), TABLE, HealthBoard().snapshot(), now=0).no_route
    static = StaticRoutes()
    skipped = static.plan(
        Channel.SMS,
        ("console", "twilio", "sns"),
        None,
        push_platform=None,
        category=None,
        priority="normal",
        only="sns",
    )
    assert names(skipped) == ["sns"]
    none = static.plan(
        Channel.SMS, ("console", "twilio"), None, push_platform=None, category=None, priority="normal", only="sns"
    )
    assert none.no_route


def test_planner_caches_per_view_and_applies_tenant_overrides() -> None:
    feed = LocalFeed(TABLE)
    planner = Planner()
    view = feed.view()
    config = {"routing": {"channels": {"sms": {"twilio": {"prices": {"GB": 0.001}}}}}}
    table, key = planner.table_for(view.table, config)
    query = sms(category="marketing", tenant_routing=key)
    first = planner.plan(query, view, table, now=0)
    assert names(first) == ["twilio", "sns"] and planner.plan(query, view, table, now=0) is first
    assert planner.table_for(view.table, {"routing": {"channels": {"sms": {"x": {"reliability": 7}}}}})[1] == ""


@pytest.mark.parametrize(
    ("error", "immediate", "move"),
    [
        (ProviderDownError("down"), False, Move.FAILOVER),
        (RetryableError("500", code="500"), True, Move.FAILOVER),
        (RetryableError("500", code="500"), False, Move.WAIT),
        (ThrottledError("429", retry_after_s=1), True, Move.FAILOVER),
        (ThrottledError("429", retry_after_s=1), False, Move.WAIT),
        (RetryableError("read timeout", sent_maybe=True), True, Move.RETRY_SAME),
        (RetryableError("read timeout", code="timeout"), True, Move.RETRY_SAME),
        (PermanentError("rejected"), True, Move.FAIL),
        (BadRecipientError("no such number"), True, Move.FAIL),
    ],
)
def test_failure_classes_decide(error: DispatchError, immediate: bool, move: Move) -> None:
    assert next_move(error, immediate_failover=immediate) is move
