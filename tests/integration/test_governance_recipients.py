"""Preferences and suppression lists on the real PostgreSQL, and the STOP / START round trip."""

from __future__ import annotations

import dataclasses
import uuid

import pytest

from engine.channels import Channel
from engine.governance.recipients import (
    NON_REQUIRED,
    Keyword,
    RecipientCheck,
    RecipientGate,
    RecipientService,
    suppressed_by,
)
from engine.models import Tenant
from engine.problems import ApiProblem
from engine.storage.recipients_store import CLAIM_SUPPRESSION_CATEGORIES, RecipientStore
from engine.storage.repository import Repository
from engine.tenant_config import validate_config

pytestmark = pytest.mark.integration

NUMBER = "+447911123456"


@pytest.fixture
def service(repo: Repository) -> RecipientService:
    return RecipientService(RecipientStore(repo.pool))


async def test_preferences_are_stored_and_honoured_in_one_statement_per_batch(
    repo: Repository, tenant: Tenant, service: RecipientService
) -> None:
    view = await service.put_preferences(
        tenant, "u_1", {"categories": {"marketing": {"email": False, "sms": True}}}, actor="key_test"
    )
    assert view.categories == {"marketing": {"email": False, "sms": True}}
    assert view.required_categories == ["auth", "transactional"] and view.updated_at is not None
    assert (await service.get_preferences(tenant, "u_1")).categories == view.categories
    assert (await service.get_preferences(tenant, "u_unknown")).categories == {}
    other = await repo.ensure_tenant(tenant.slug + "_b")
    assert (await service.get_preferences(other, "u_1")).categories == {}  # another tenant's user_id space
    statements: list[str] = []
    async with repo.pool.acquire() as conn:
        conn.add_query_logger(lambda q: statements.append(q.query))
        gate = RecipientGate(RecipientStore(conn))  # type: ignore[arg-type]
        refused = await gate.refused(
            {
                1: RecipientCheck(tenant, "u_1", "marketing", Channel.EMAIL),
                2: RecipientCheck(tenant, "u_1", "marketing", Channel.SMS),
                3: RecipientCheck(tenant, "u_1", "auth", Channel.EMAIL),
                4: RecipientCheck(tenant, "u_2", "marketing", Channel.EMAIL),
                5: RecipientCheck(other, "u_1", "marketing", Channel.EMAIL),
                6: RecipientCheck(tenant, None, "marketing", Channel.EMAIL),
            }
        )
    assert refused == {1: "recipient preference: marketing off on email"}
    assert len([q for q in statements if "recipient_preferences" in q]) == 1


async def test_a_change_of_preferences_is_audited_with_before_and_after(
    repo: Repository, tenant: Tenant, service: RecipientService
) -> None:
    off = {"categories": {"marketing": {"email": False}}}
    await service.put_preferences(tenant, "ada@example.com", off, actor="key_a")
    await service.put_preferences(tenant, "ada@example.com", off, actor="key_a")  # no change: no record
    await service.put_preferences(tenant, "ada@example.com", {"categories": {}}, actor="key_b")
    with pytest.raises(ApiProblem):
        await service.put_preferences(tenant, "ada@example.com", {"categories": {"auth": {"sms": False}}}, actor="x")
    rows = await repo.pool.fetch(
        "SELECT actor, subject, detail FROM audit_log WHERE tenant_id = $1 AND action = 'preferences.set' ORDER BY id",
        tenant.id,
    )
    assert [(r["actor"], r["detail"]) for r in rows] == [
        ("key_a", {"before": {}, "after": {"marketing": {"email": False}}}),
        ("key_b", {"before": {"marketing": {"email": False}}, "after": {}}),
    ]
    assert all("ada@example.com" not in r["subject"] for r in rows)  # a user id that is an address is masked


async def test_a_required_category_cannot_be_opted_out_of(tenant: Tenant, service: RecipientService) -> None:
    with pytest.raises(ApiProblem) as refused:
        body = {"categories": {"auth": {"sms": False}, "billing": {"sms": False}}}
        await service.put_preferences(tenant, "u_1", body, actor="key_test")
    assert refused.value.status == 422
    assert [e.loc for e in refused.value.errors] == [("body", "categories", "auth", "sms")]
    await service.put_preferences(
        tenant, "u_1", {"categories": {"auth": {"sms": True}}}, actor="key_test"
    )  # saying yes is fine
    stricter = dataclasses.replace(
        tenant, config=validate_config({"preferences": {"required_categories": ["auth", "billing"]}})
    )
    with pytest.raises(ApiProblem):
        await service.put_preferences(stricter, "u_1", {"categories": {"billing": {"sms": False}}}, actor="key_test")


@pytest.mark.parametrize(
    ("body", "loc"),
    [
        ({"categories": {"marketing": {"fax": False}}}, ("body", "categories", "marketing", "fax", "[key]")),
        ({"categories": {"Marketing": {"email": False}}}, ("body", "categories", "Marketing", "[key]")),
        ({"categories": {"marketing": {"email": "no"}}}, ("body", "categories", "marketing", "email")),
        ({"categories": [], "x": 1}, ("body", "x")),
    ],
)
async def test_bad_preferences_are_422_naming_the_field(
    tenant: Tenant, service: RecipientService, body: dict[str, object], loc: tuple[object, ...]
) -> None:
    with pytest.raises(ApiProblem) as bad:
        await service.put_preferences(tenant, "u_1", body, actor="key_test")
    assert bad.value.status == 422 and loc in [e.loc for e in bad.value.errors], bad.value.errors


async def test_suppressions_are_added_once_listed_and_removed(
    repo: Repository, tenant: Tenant, service: RecipientService
) -> None:
    entry = {"channel": "email", "address": " Ada@Example.com", "category": "marketing", "reason": "asked"}
    first, created = await service.add_suppression(tenant, entry, actor="a")
    assert created and first.address == "ada@example.com" and first.scope == "category"
    again, created = await service.add_suppression(
        tenant, {"channel": "email", "address": "ada@example.com", "category": "marketing", "reason": "x"}, actor="a"
    )
    assert not created and again.id == first.id
    everything, _ = await service.add_suppression(
        tenant, {"channel": "sms", "address": "+44 7911 123456", "reason": "invalid number"}, actor="a"
    )
    assert everything.scope == "all" and everything.channels == ["sms", "whatsapp"] and everything.address == NUMBER
    page = await service.list_suppressions(tenant, limit=1)
    assert [i.id for i in page.items] == [everything.id] and page.next_cursor
    rest = await service.list_suppressions(tenant, cursor=page.next_cursor)
    assert [i.id for i in rest.items] == [first.id]
    assert [i.id for i in (await service.list_suppressions(tenant, channel="whatsapp")).items] == [everything.id]
    found = await service.list_suppressions(tenant, channel="email", address="ADA@example.com")
    assert [i.id for i in found.items] == [first.id]
    audit = await repo.pool.fetch(
        "SELECT action, detail FROM audit_log WHERE tenant_id = $1 AND action LIKE 'suppression.%'", tenant.id
    )
    assert len(audit) == 2 and all("ada@example.com" not in str(r["detail"]) for r in audit)  # masked
    other = await repo.ensure_tenant(tenant.slug + "_c")
    with pytest.raises(ApiProblem) as foreign:
        await service.remove_suppression(other, first.id, actor="b")
    assert foreign.value.status == 404
    assert (await service.list_suppressions(other)).items == []
    removed = await service.remove_suppression(tenant, first.id, actor="a")
    assert removed.id == first.id
    for bad_id in (first.id, "sup_zz", "msg_" + "0" * 32):
        with pytest.raises(ApiProblem):
            await service.remove_suppression(tenant, bad_id, actor="a")


@pytest.mark.parametrize(
    ("body", "loc"),
    [
        ({"channel": "email", "address": "not-an-address", "reason": "r"}, ("body", "address")),
        ({"channel": "sms", "address": "+1", "reason": "r"}, ("body", "address")),
        ({"channel": "inapp", "address": "u_1", "reason": "r"}, ("body", "channel")),
        ({"channel": "push", "address": "short", "reason": "r"}, ("body", "address")),
        ({"channel": "email", "address": "a@example.com", "reason": ""}, ("body", "reason")),
        ({"channel": "email", "address": "a@example.com", "reason": "r", "category": "*all"}, ("body", "category")),
    ],
)
async def test_bad_suppressions_are_422_naming_the_field(
    tenant: Tenant, service: RecipientService, body: dict[str, object], loc: tuple[object, ...]
) -> None:
    with pytest.raises(ApiProblem) as bad:
        await service.add_suppression(tenant, body, actor="a")
    assert bad.value.status == 422 and loc in [e.loc for e in bad.value.errors], bad.value.errors


async def test_stop_and_start_round_trip(repo: Repository, tenant: Tenant, service: RecipientService) -> None:
    stop = await service.inbound(tenant, Channel.SMS, NUMBER, "STOP")
    assert stop.keyword is Keyword.STOP and stop.changed
    assert not (await service.inbound(tenant, Channel.WHATSAPP, NUMBER, "stop")).changed  # already stopped
    (entry,) = (await service.list_suppressions(tenant, channel="sms", address=NUMBER)).items
    assert entry.scope == "non_required" and entry.category is None
    stored = await repo.pool.fetchval("SELECT category FROM suppressions WHERE id = $1", _uuid(entry.id))
    assert stored == NON_REQUIRED
    start = await service.inbound(tenant, Channel.SMS, NUMBER, "Start")
    assert start.keyword is Keyword.START and start.changed
    assert (await service.list_suppressions(tenant, channel="sms", address=NUMBER)).items == []
    help_ = await service.inbound(tenant, Channel.SMS, NUMBER, "HELP", help_text="Acme: reply STOP to stop")
    assert help_.reply == "Acme: reply STOP to stop" and not help_.changed
    assert (await service.inbound(tenant, Channel.SMS, NUMBER, "hello")).keyword is None


async def test_start_does_not_lift_a_dead_number(tenant: Tenant, service: RecipientService) -> None:
    await service.add_suppression(tenant, {"channel": "sms", "address": NUMBER, "reason": "invalid"}, actor="a")
    await service.inbound(tenant, Channel.SMS, NUMBER, "STOP")
    await service.inbound(tenant, Channel.SMS, NUMBER, "START")
    (left,) = (await service.list_suppressions(tenant, channel="sms", address=NUMBER)).items
    assert left.scope == "all" and left.reason == "invalid"


def _uuid(public_id: str) -> uuid.UUID:
    return uuid.UUID(hex=public_id.removeprefix("sup_"))


async def test_the_claims_suppression_fragment_finds_every_entry_of_the_address(
    repo: Repository, tenant: Tenant, service: RecipientService
) -> None:
    await service.inbound(tenant, Channel.SMS, NUMBER, "STOP")
    marketing = {"channel": "email", "address": "ada@example.com", "category": "marketing", "reason": "r"}
    await service.add_suppression(tenant, marketing, actor="a")
    await service.add_suppression(tenant, {"channel": "push", "address": "token-123456", "reason": "gone"}, actor="a")
    sql = f"""SELECT {CLAIM_SUPPRESSION_CATEGORIES} AS c
              FROM (VALUES ($1::uuid, $2::jsonb)) AS m(tenant_id, "to")"""

    async def categories(to: dict[str, object]) -> list[str | None]:
        return list(await repo.pool.fetchval(sql, tenant.id, to))

    required = tenant.config.preferences.required_categories
    by_phone = await categories({"phone": NUMBER})
    assert by_phone == [NON_REQUIRED]
    assert suppressed_by(by_phone, "marketing", required) and not suppressed_by(by_phone, "auth", required)
    by_email = await categories({"email": "Ada@Example.com"})
    assert by_email == ["marketing"] and not suppressed_by(by_email, "auth", required)
    by_token = await categories({"push": {"platform": "fcm", "token": "token-123456"}})
    assert by_token == [None] and suppressed_by(by_token, "auth", required)
    assert await categories({"email": "someone@example.com"}) == []
