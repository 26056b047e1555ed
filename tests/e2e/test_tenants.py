"""Tenants over HTTP: the platform creates and merge-patches them, a tenant admin reads and changes its own
allowed keys, every change is audited and reaches sending without a restart."""

from __future__ import annotations

import json
import time
import uuid

import httpx
import pytest

from tests.e2e.conftest import Herald
from tests.e2e.test_api import otp, post

pytestmark = [pytest.mark.ray, pytest.mark.integration]

MERGE_PATCH = {"Content-Type": "application/merge-patch+json"}


def _slug() -> str:
    return f"t_{uuid.uuid4().hex[:10]}"


def _platform(herald: Herald) -> httpx.Client:
    headers = {"Authorization": f"Bearer {herald.platform_token()}"}
    return httpx.Client(base_url=herald.base_url, headers=headers, timeout=30)


def _admin(herald: Herald, slug: str) -> httpx.Client:
    headers = {"Authorization": f"Bearer {herald.token(slug, admin=True)}"}
    return httpx.Client(base_url=herald.base_url, headers=headers, timeout=30)


def test_platform_creates_reads_pages_and_patches_tenants(herald: Herald) -> None:
    slug = _slug()
    with _platform(herald) as ops:
        made = ops.post("/admin/tenants", json={"slug": slug, "name": "Acme", "config": {"default_locale": "de_de"}})
        assert made.status_code == 201, made.text
        assert made.json()["config"]["default_locale"] == "de-DE" and made.headers["etag"] == '"1"'
        assert ops.post("/admin/tenants", json={"slug": slug}).status_code == 409
        bad = ops.post(
            "/admin/tenants", json={"slug": _slug(), "config": {"providers": {"email": {"allow": ["nope"]}}}}
        )
        assert bad.status_code == 422
        assert bad.json()["errors"][0]["loc"][:4] == ["body", "config", "providers", "email"]

        patched = ops.patch(
            f"/admin/tenants/{slug}",
            content=json.dumps({"config": {"region": "us", "unsubscribe": True}}),
            headers={**MERGE_PATCH, "If-Match": made.headers["etag"]},
        )
        assert patched.status_code == 200, patched.text
        doc = patched.json()
        assert doc["config"]["region"] == "us" and doc["config"]["unsubscribe"] is True
        assert doc["config"]["default_locale"] == "de-DE"  # merge, not replace
        stale = ops.patch(f"/admin/tenants/{slug}", json={"name": "x"}, headers={"If-Match": '"1"'})
        assert stale.status_code == 412

        assert ops.get(f"/admin/tenants/{slug}").json()["config_version"] == doc["config_version"]
        assert ops.get("/admin/tenants/t_missing_zz").status_code == 404
        assert ops.post("/admin/tenants", json={"slug": _slug()}).status_code == 201
        page = ops.get("/admin/tenants", params={"limit": 1})
        assert page.status_code == 200 and len(page.json()["items"]) == 1 and page.json()["next_cursor"]

    audit = herald.sql(
        "SELECT action, detail FROM audit_log a JOIN tenants t ON t.id = a.tenant_id WHERE t.slug = $1 ORDER BY a.id",
        slug,
    )
    actions = [row["action"] for row in audit]
    assert actions[0] == "tenant.create" and len(actions) == 2
    detail = audit[1]["detail"]
    detail = json.loads(detail) if isinstance(detail, str) else detail
    assert detail["before"]["config"]["region"] != "us" and detail["after"]["config"]["region"] == "us"


def test_tenant_admin_changes_only_allowed_keys_of_its_own_tenant(herald: Herald) -> None:
    slug, other = _slug(), _slug()
    herald.token(other)
    with _admin(herald, slug) as mine:
        own = mine.get("/api/tenant")
        assert own.status_code == 200 and own.json()["slug"] == slug
        assert "default_locale" in own.json()["editable"]
        ok = mine.patch("/api/tenant", json={"config": {"default_locale": "fr"}})
        assert ok.status_code == 200 and ok.json()["config"]["default_locale"] == "fr"
        refused = mine.patch("/api/tenant", json={"config": {"region": "us"}})
        assert refused.status_code == 403
        assert refused.json()["errors"][0]["loc"] == ["body", "config", "region"]
        assert mine.get("/admin/tenants").status_code == 403
        assert mine.get(f"/admin/tenants/{other}").status_code == 403
    with herald.client(slug) as sender:  # no admin scope
        assert sender.get("/api/tenant").status_code == 403
    with _platform(herald) as ops:
        assert ops.get("/api/tenant").status_code == 403  # the platform acts for no tenant


def test_a_config_change_reaches_sending_within_seconds(herald: Herald) -> None:
    slug = _slug()
    with _admin(herald, slug) as admin, herald.client(slug) as api:
        assert admin.patch("/api/tenant", json={"config": {"providers": {"email": {"allow": ["console"]}}}}).is_success
        first = post(api, otp("first@example.com")).json()["message_id"]
        assert herald.wait_status(api, first, lambda s: s == "sent")["provider"] == "console"
        changed = admin.patch("/api/tenant", json={"config": {"providers": {"email": {"allow": ["sendgrid"]}}}})
        assert changed.status_code == 200, changed.text
        started = time.monotonic()
        second = post(api, otp("second@example.com")).json()["message_id"]
        view = herald.wait_status(api, second, lambda s: s in ("sent", "delivered"))  # SendGrid reports back
        assert view["provider"] == "sendgrid", view
        assert time.monotonic() - started < 10
