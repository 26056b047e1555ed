"""``POST /api/batch`` and ``/api/batches/{id}`` on the real application object and the real PostgreSQL,
without Ray (httpx's ASGI transport): per-item answers, limits, idempotency per item, NDJSON, progress,
cancel and tenant isolation."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

import httpx
import pytest

from engine.auth import issue_token
from engine.batch import BatchIntake
from engine.governance.keys import ApiKeyVerifier, Authenticator, pepper_from
from engine.intake import Intake
from engine.metrics import MetricsBuffer
from engine.models import Tenant
from engine.storage.batch_store import BatchStore
from engine.storage.keys_store import ApiKeyStore
from engine.storage.repository import Repository
from engine.templating import TemplateCatalog
from serve_app.http import create_app
from serve_app.limits import BATCH_MAX_BODY_BYTES
from serve_app.routes import batches, notifications

pytestmark = pytest.mark.integration

SECRET = "batch-test-secret-of-at-least-32-bytes"


def item(n: int, run: str, **extra: Any) -> dict[str, Any]:
    return {
        "channel": "email",
        "template_id": "otp_login:v3",
        "locale": "en-GB",
        "to": {"email": f"user{n}@example.com"},
        "variables": {"code": f"{n:06d}"},
        "idempotency_key": f"{run}-{n}",
        **extra,
    }


class Api:
    def __init__(self, client: httpx.AsyncClient, repo: Repository) -> None:
        self.client = client
        self.repo = repo

    def headers(self, tenant: Tenant, **extra: str) -> dict[str, str]:
        token = issue_token(SECRET, tenant.slug, scopes=("send", "read"))
        return {"Authorization": f"Bearer {token}", **extra}

    async def post(self, tenant: Tenant, items: list[Any]) -> httpx.Response:
        return await self.client.post("/api/batch", json=items, headers=self.headers(tenant))


@pytest.fixture
async def api(repo: Repository, catalog: TemplateCatalog) -> AsyncIterator[Api]:
    intake = Intake(repo, catalog, metrics=MetricsBuffer(), idempotency_ttl_s=3600)
    app = create_app()
    app.include_router(batches.router)
    app.include_router(notifications.router)
    app.state.herald = SimpleNamespace(
        secret=SECRET,
        intake=intake,
        batches=BatchIntake(intake, BatchStore(repo.pool)),
        authenticator=Authenticator(SECRET, ApiKeyVerifier(ApiKeyStore(repo.pool), pepper=pepper_from(SECRET))),
    )
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://t") as client:
        yield Api(client, repo)


@pytest.fixture(autouse=True)
async def no_outbox_left(repo: Repository, tenant: Tenant) -> AsyncIterator[None]:
    """Nothing of these tests is left for another test's relay to publish."""
    yield
    await repo.pool.execute("DELETE FROM outbox WHERE tenant_id = $1", tenant.id)


@pytest.fixture
def run() -> str:
    return uuid.uuid4().hex[:8]


async def test_each_item_is_answered_on_its_own(api: Api, tenant: Tenant, run: str) -> None:
    bad_email = item(1, run, to={"email": "not-an-address"})
    no_key = {k: v for k, v in item(2, run).items() if k != "idempotency_key"}
    bad_vars = item(3, run, variables={})
    r = await api.post(tenant, [item(0, run), bad_email, no_key, bad_vars, "text", item(5, run)])
    assert r.status_code == 202, r.text
    doc = r.json()
    assert (doc["accepted"], doc["replayed"], doc["rejected"]) == (2, 0, 4)
    codes = [(i["index"], i["code"]) for i in doc["items"]]
    assert codes == [(0, 202), (1, 422), (2, 422), (3, 422), (4, 422), (5, 202)]
    assert doc["items"][1]["errors"][0]["loc"] == ["body", 1, "to", "email"]
    assert doc["items"][2]["errors"][0]["loc"] == ["body", 2, "idempotency_key"]
    assert doc["items"][3]["errors"][0]["loc"][:3] == ["body", 3, "variables"]
    accepted = doc["items"][0]
    assert accepted["status"] == "queued" and accepted["message_id"].startswith("msg_")
    mid = uuid.UUID(hex=accepted["message_id"][4:])
    rows = await api.repo.pool.fetchrow(
        """SELECT m.status, m.batch_id, (SELECT count(*) FROM outbox o WHERE o.message_id = m.id) AS outbox,
                  (SELECT array_agg(type) FROM notification_events e WHERE e.message_id = m.id) AS events
           FROM messages m WHERE m.id = $1""",
        mid,
    )
    assert rows["status"] == "queued" and rows["outbox"] == 1 and rows["events"] == ["NotificationAccepted"]
    assert "bat_" + rows["batch_id"].hex == doc["batch_id"]


async def test_idempotency_applies_to_each_item(api: Api, tenant: Tenant, run: str) -> None:
    first = (await api.post(tenant, [item(0, run), item(1, run)])).json()
    # a repeat of item 0, item 1's key with another body, a repeat inside the batch, a new one
    again = await api.post(
        tenant, [item(0, run), item(1, run, variables={"code": "999999"}), item(2, run), item(2, run)]
    )
    doc = again.json()
    assert [(i["code"], i["replayed"]) for i in doc["items"]] == [(202, True), (422, False), (202, False), (202, True)]
    assert doc["items"][0]["message_id"] == first["items"][0]["message_id"]
    assert doc["items"][1]["errors"][0]["loc"] == ["body", 1, "idempotency_key"]
    assert doc["items"][3]["message_id"] == doc["items"][2]["message_id"]
    assert (doc["accepted"], doc["replayed"], doc["rejected"]) == (1, 2, 1)
    stored = await api.repo.pool.fetchval(
        "SELECT count(*) FROM messages WHERE tenant_id = $1 AND idempotency_key LIKE $2", tenant.id, f"{run}-%"
    )
    assert stored == 3
    # the single route sees the batch's keys, and the batch sees the single route's
    single = await api.client.post("/api/notifications", json=item(2, run), headers=api.headers(tenant))
    assert single.status_code == 202 and single.headers.get("Idempotent-Replayed") == "true"
    assert single.json()["message_id"] == doc["items"][2]["message_id"]


async def test_ndjson_lines_are_items(api: Api, tenant: Tenant, run: str) -> None:
    body = b"\n".join([json.dumps(item(0, run)).encode(), b"{not json", b"", json.dumps(item(1, run)).encode()])
    r = await api.client.post(
        "/api/batch", content=body, headers=api.headers(tenant, **{"Content-Type": "application/x-ndjson"})
    )
    assert r.status_code == 202, r.text
    assert [(i["index"], i["code"]) for i in r.json()["items"]] == [(0, 202), (1, 422), (2, 202)]
    assert r.json()["items"][1]["errors"][0]["loc"] == ["body", 1]


async def test_limits(api: Api, tenant: Tenant, run: str) -> None:
    r = await api.client.post("/api/batch", json=[item(0, run)] * 10_001, headers=api.headers(tenant))
    assert r.status_code == 422 and "10000" in r.json()["detail"]
    too_big = b"[" + b" " * BATCH_MAX_BODY_BYTES + b"]"
    assert (await api.client.post("/api/batch", content=too_big, headers=api.headers(tenant))).status_code == 413
    assert (await api.client.post("/api/batch", json={"a": 1}, headers=api.headers(tenant))).status_code == 422
    assert (await api.client.post("/api/batch", json=[], headers=api.headers(tenant))).status_code == 422
    assert (await api.client.post("/api/batch", content=b"[", headers=api.headers(tenant))).status_code == 400
    # a value PostgreSQL cannot store is its item's error only
    r = await api.post(tenant, [item(0, run, variables={"code": "1\u0000"}), item(1, run)])
    assert [i["code"] for i in r.json()["items"]] == [422, 202]
    assert r.json()["items"][0]["errors"][0]["loc"] == ["body", 0, "variables", "code"]


async def test_progress_cancel_and_isolation(api: Api, tenant: Tenant, repo: Repository, run: str) -> None:
    later = "2099-01-01T00:00:00Z"
    doc = (
        await api.post(tenant, [item(0, run), item(1, run, schedule_at=later), item(2, run, schedule_at=later)])
    ).json()
    batch_id = doc["batch_id"]
    await repo.pool.execute(
        "UPDATE messages SET status = 'sent', updated_at = now() + interval '1 second' WHERE id = $1",
        uuid.UUID(hex=doc["items"][0]["message_id"][4:]),
    )
    view = (await api.client.get(f"/api/batches/{batch_id}", headers=api.headers(tenant))).json()
    assert view["counts"] == {"sent": 1, "scheduled": 2} and (view["done"], view["pending"]) == (1, 2)
    assert view["rate_per_s"] > 0
    # the two scheduled ones go in 2099, whatever the first one's rate says
    assert view["eta_s"] > (datetime(2099, 1, 1, tzinfo=UTC) - datetime.now(UTC)).total_seconds() - 60

    other = await repo.ensure_tenant(f"t_{uuid.uuid4().hex[:12]}")
    for method in ("GET", "DELETE"):
        r = await api.client.request(method, f"/api/batches/{batch_id}", headers=api.headers(other))
        assert r.status_code == 404
    r = await api.client.get("/api/batches/bat_nothing", headers=api.headers(tenant))
    assert r.status_code == 404

    cancelled = (await api.client.delete(f"/api/batches/{batch_id}", headers=api.headers(tenant))).json()
    assert cancelled["cancelled"] == 2 and cancelled["counts"] == {"sent": 1, "cancelled": 2}
    assert cancelled["pending"] == 0 and cancelled["cancelled_at"] is not None
    again = (await api.client.delete(f"/api/batches/{batch_id}", headers=api.headers(tenant))).json()
    assert again["cancelled"] == 0
    left = await repo.pool.fetchval(
        "SELECT count(*) FROM outbox o JOIN messages m ON m.id = o.message_id WHERE m.batch_id = $1",
        uuid.UUID(hex=batch_id[4:]),
    )
    assert left == 1  # the sent one's row (this test runs no relay); the cancelled ones' rows are gone
