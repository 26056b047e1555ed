"""Tenant isolation on every operation of the served /openapi.json: each is refused to the wrong principal,
and one tenant's ids are not found (and not changed) through another tenant's token."""

from __future__ import annotations

import re
import uuid

import httpx
import pytest

from tests.e2e.conftest import Herald
from tests.e2e.test_api import new_tenant, otp, post
from tests.e2e.test_templates import doc

pytestmark = [pytest.mark.ray, pytest.mark.integration]

PARAM = re.compile(r"\{(\w+)\}")
#: A value of the right shape for each path parameter (the principal is refused before it is read).
SHAPES = {"version": "1", "channel": "email", "provider": "sendgrid", "locale": "en"}
#: Ids a tenant chooses (a template's, a recipient's): each tenant has its own, so another tenant's call
#: reaches its own (none, or empty), and must show nothing of the owner's.
NAMESPACED = {"template_id", "user_id"}
OWNERS_CONTENT = ("Mine", "Next", '"marketing"')
#: A valid body where one is needed, so the id is what is refused, not the body.
BODIES: dict[tuple[str, str], object] = {
    ("PATCH", "/api/notifications/{message_id}"): {"schedule_at": "2099-02-01T00:00:00Z"},
    ("POST", "/api/templates/{template_id}/rollback"): {"version": 1},
    ("POST", "/api/webhooks/endpoints/{endpoint_id}/replay"): {"since": "2026-01-01T00:00:00Z"},
}


def operations(herald: Herald) -> list[tuple[str, str, set[str]]]:
    """Every (method, path, scopes) of the served API that needs a principal."""
    served = httpx.get(f"{herald.base_url}/openapi.json", timeout=30).json()
    ops = []
    for path, by_method in served["paths"].items():
        for method, op in by_method.items():
            scopes = {s for need in op.get("security") or [] for names in need.values() for s in names}
            if scopes:
                ops.append((method.upper(), path, scopes))
    return ops


def call(http: httpx.Client, method: str, path: str, token: str | None, ids: dict[str, str]) -> httpx.Response:
    url = PARAM.sub(lambda m: ids.get(m.group(1), SHAPES.get(m.group(1), "x")), path)
    headers = {"Idempotency-Key": uuid.uuid4().hex}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    body = BODIES.get((method, path), {}) if method in ("POST", "PUT", "PATCH") else None
    return http.request(method, url, json=body, headers=headers)


def test_every_operation_refuses_the_wrong_principal(herald: Herald) -> None:
    ops = operations(herald)
    assert len(ops) >= 50, len(ops)  # the whole API, not a handful
    tenant_admin, platform = herald.token(new_tenant(), admin=True), herald.platform_token()
    wrong: list[str] = []
    with httpx.Client(base_url=herald.base_url, timeout=30) as http:
        for method, path, scopes in ops:
            if (r := call(http, method, path, None, {})).status_code != 401:
                wrong.append(f"{method} {path} without a token: {r.status_code}")
            # the platform's alone: refused to a tenant admin, who holds every tenant scope; a tenant's:
            # refused to the platform, which acts for no tenant; both ways in: neither refused
            other = tenant_admin if scopes == {"platform"} else platform if "platform" not in scopes else None
            if other is not None and (r := call(http, method, path, other, {})).status_code != 403:
                wrong.append(f"{method} {path} as the wrong principal: {r.status_code} {r.text[:120]}")
    assert not wrong, "\n".join(wrong)


def owned_by(herald: Herald, tenant: str) -> dict[str, str]:
    """One of each resource a path names, created by ``tenant``: {path parameter: id}."""
    ids: dict[str, str] = {}
    with httpx.Client(
        base_url=herald.base_url, timeout=30, headers={"Authorization": f"Bearer {herald.token(tenant, admin=True)}"}
    ) as api:
        accepted = post(api, otp(schedule_at="2099-01-01T00:00:00Z"))  # stays scheduled: cancellable
        assert accepted.status_code == 202, accepted.text
        ids["message_id"] = accepted.json()["message_id"]
        batch = api.post("/api/batch", json=[otp(f"b{i}@example.com") for i in range(2)])
        assert batch.status_code in (200, 202), batch.text
        ids["batch_id"] = batch.json()["batch_id"]
        key = api.post("/api/keys", json={"name": "mine", "scopes": ["read"]})
        assert key.status_code == 201, key.text
        ids["key_id"] = key.json()["id"]
        entry = {"channel": "email", "address": "kept@example.com", "reason": "asked"}
        suppression = api.post("/api/suppressions", json=entry)
        assert suppression.status_code == 201, suppression.text
        ids["suppression_id"] = suppression.json()["id"]
        endpoint = api.post("/api/webhooks/endpoints", json={"url": "http://127.0.0.1:9/hook"})
        assert endpoint.status_code == 201, endpoint.text
        ids["endpoint_id"] = endpoint.json()["id"]
        link = api.post("/api/shortlinks", json={"url": "https://example.com/mine"})
        assert link.status_code == 201, link.text
        ids["link_id"] = link.json()["id"]
        template = f"own_{uuid.uuid4().hex[:6]}"
        assert api.put(f"/api/templates/{template}/draft", json=doc("Mine")).status_code == 200
        assert api.post(f"/api/templates/{template}/publish").status_code == 200
        assert api.put(f"/api/templates/{template}/draft", json=doc("Next")).status_code == 200
        ids["template_id"] = template
        prefs = {"categories": {"marketing": {"email": False}}}
        assert api.put("/api/recipients/u-own/preferences", json=prefs).status_code == 200
        ids["user_id"] = "u-own"
    return ids


def test_another_tenants_ids_are_not_found_and_not_changed_on_every_route(herald: Herald) -> None:
    owner, stranger = new_tenant(), new_tenant()
    ids = owned_by(herald, owner)
    theirs = herald.token(stranger, admin=True)  # every tenant scope, on the wrong tenant
    by_id = [(m, p, s) for m, p, s in operations(herald) if set(PARAM.findall(p)) & ids.keys()]
    assert len(by_id) >= 20, by_id
    leaked: list[str] = []
    with httpx.Client(base_url=herald.base_url, timeout=30) as http:
        for method, path, _ in by_id:
            r = call(http, method, path, theirs, ids)
            if NAMESPACED & set(PARAM.findall(path)):  # names one of the caller's own: never the owner's
                if r.status_code >= 500 or any(mark in r.text for mark in OWNERS_CONTENT):
                    leaked.append(f"{method} {path}: {r.status_code} {r.text[:120]}")
            elif r.status_code != 404:
                leaked.append(f"{method} {path}: {r.status_code} {r.text[:120]}")
    assert not leaked, "\n".join(leaked)
    with httpx.Client(
        base_url=herald.base_url, timeout=30, headers={"Authorization": f"Bearer {herald.token(owner, admin=True)}"}
    ) as api:  # nothing the stranger sent changed the owner's data
        assert api.get(f"/api/notifications/{ids['message_id']}").json()["status"] == "scheduled"
        assert api.get(f"/api/batches/{ids['batch_id']}").status_code == 200
        assert [k["id"] for k in api.get("/api/keys").json()["items"]] == [ids["key_id"]]
        assert ids["suppression_id"] in api.get("/api/suppressions").text
        assert api.get(f"/api/webhooks/endpoints/{ids['endpoint_id']}").status_code == 200
        assert api.get(f"/api/templates/{ids['template_id']}/draft").status_code == 200
        prefs = api.get("/api/recipients/u-own/preferences").json()["categories"]
        assert prefs == {"marketing": {"email": False}}
