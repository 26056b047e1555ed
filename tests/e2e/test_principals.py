"""Two kinds of principal: the platform operator sees platform-wide views, a tenant sees its own tenant."""

from __future__ import annotations

import contextlib
import io

import httpx
import pytest

from engine.errors import ConfigurationError
from serve_app.cli import build_parser, cmd_token
from tests.e2e.conftest import Herald
from tests.e2e.test_api import new_tenant, otp, post

pytestmark = [pytest.mark.ray, pytest.mark.integration]


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def cli_token(herald: Herald, *argv: str) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert cmd_token(herald.settings, build_parser().parse_args(["token", *argv])) == 0
    return out.getvalue().strip()


def test_queues_platform_sees_the_queues_a_tenant_admin_its_own_messages(herald: Herald) -> None:
    mine, theirs = new_tenant(), new_tenant()
    for tenant, n in ((mine, 2), (theirs, 3)):
        with herald.client(tenant) as api:
            for i in range(n):
                assert post(api, otp(f"q{i}@example.com")).status_code == 202
    admin = httpx.get(f"{herald.base_url}/admin/queues", headers=bearer(herald.token(mine, admin=True)))
    assert admin.status_code == 200, admin.text
    view = admin.json()
    assert view["view"] == "tenant" and view["tenant"] == mine
    assert sum(view["by_status"].values()) == 2
    assert "queues" not in view and "outbox" not in view  # platform-wide figures are not a tenant's
    platform = httpx.get(f"{herald.base_url}/admin/queues", headers=bearer(cli_token(herald, "--platform")))
    assert platform.status_code == 200, platform.text
    everything = platform.json()
    assert everything["view"] == "platform" and "tenant" not in everything
    assert "notifications.high" in [q["queue"] for q in everything["queues"]]
    assert {"due", "next_due_at"} <= set(everything["outbox"])
    with herald.client(mine) as api:  # a tenant token without the admin scope
        assert api.get("/admin/queues").status_code == 403


def test_each_principal_is_refused_the_others_routes(herald: Herald) -> None:
    tenant_admin = bearer(herald.token(new_tenant(), admin=True))
    platform = bearer(herald.platform_token())
    with httpx.Client(base_url=herald.base_url, timeout=30) as http:
        refused = http.get("/admin/providers", headers=tenant_admin)
        assert refused.status_code == 403 and refused.headers["content-type"].startswith("application/problem+json")
        assert "platform" in refused.json()["detail"]
        assert http.get("/admin/providers", headers=platform).status_code == 200
        for method, path, body in (
            ("POST", "/api/notifications", otp()),
            ("GET", "/api/partials", None),
            ("PUT", "/admin/credentials/email/sendgrid", {"HERALD_SENDGRID_API_KEY": "SG.x"}),
        ):
            r = http.request(method, path, json=body, headers={**platform, "Idempotency-Key": "k"})
            assert r.status_code == 403 and "no tenant" in r.json()["detail"], (path, r.text)
        assert http.get("/admin/providers").status_code == 401


def test_token_command_makes_platform_and_tenant_tokens(herald: Herald) -> None:
    tenant = new_tenant()
    admin = cli_token(herald, "--tenant", tenant, "--admin")
    assert httpx.get(f"{herald.base_url}/admin/queues", headers=bearer(admin)).json()["tenant"] == tenant
    with pytest.raises(ConfigurationError, match="--admin"):
        cli_token(herald, "--platform", "--admin")
    with pytest.raises(SystemExit), contextlib.redirect_stderr(io.StringIO()):
        build_parser().parse_args(["token"])  # a tenant or the platform, one of the two
