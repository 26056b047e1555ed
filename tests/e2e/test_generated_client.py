"""A client generated from the served /openapi.json (openapi-python-client) calls the running API."""

from __future__ import annotations

import importlib
import json
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest
from openapi_spec_validator import validate

from tests.e2e.conftest import Herald
from tests.e2e.test_api import new_tenant, otp

pytestmark = [pytest.mark.ray, pytest.mark.integration]

PACKAGE = "herald_client"


def _generator() -> str:
    beside = Path(sys.executable).parent / "openapi-python-client"
    found = str(beside) if beside.exists() else shutil.which("openapi-python-client")
    assert found, "openapi-python-client is a test dependency (pip install -e '.[test]')"
    return found


@pytest.fixture(scope="module")
def client_package(herald: Herald, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ModuleType]:
    doc = httpx.get(f"{herald.base_url}/openapi.json").json()
    validate(doc)
    root = tmp_path_factory.mktemp("generated")
    (root / "openapi.json").write_text(json.dumps(doc))
    config = {
        "post_hooks": [],
        "project_name_override": PACKAGE,
        "package_name_override": PACKAGE,
        "content_type_overrides": {  # the open pixel as bytes, TwiML as text, an NDJSON batch as bytes
            "image/gif": "application/octet-stream",
            "application/xml": "text/plain",
            "application/x-ndjson": "application/octet-stream",
        },
    }
    (root / "config.json").write_text(json.dumps(config))
    args = ["generate", "--path", "openapi.json", "--config", "config.json", "--meta", "none", "--output-path", PACKAGE]
    done = subprocess.run(
        [_generator(), *args],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "warning" not in (done.stdout + done.stderr).lower(), done.stdout + done.stderr
    sys.path.insert(0, str(root))
    try:
        yield importlib.import_module(PACKAGE)
    finally:
        sys.path.remove(str(root))
        for name in [m for m in sys.modules if m == PACKAGE or m.startswith(PACKAGE + ".")]:
            del sys.modules[name]


def part(package: ModuleType, name: str) -> Any:
    return importlib.import_module(f"{package.__name__}.{name}")


def test_generated_client_sends_reads_previews_and_reads_problems(herald: Herald, client_package: ModuleType) -> None:
    models = part(client_package, "models")
    tenant = new_tenant()
    api = client_package.AuthenticatedClient(base_url=herald.base_url, token=herald.token(tenant))
    create = part(client_package, "api.notifications.create_notification")
    accepted = create.sync_detailed(
        client=api, body=models.NotificationRequest.from_dict(otp()), idempotency_key=uuid.uuid4().hex
    )
    assert accepted.status_code == 202 and isinstance(accepted.parsed, models.NotificationAccepted)
    message_id = accepted.parsed.message_id
    herald.wait_status(herald.client(tenant), message_id, lambda s: s == "sent")

    view = part(client_package, "api.notifications.get_notification").sync(message_id, client=api)
    assert isinstance(view, models.NotificationView) and view.status.value == "sent"
    assert [e.type_ for e in view.events] == ["NotificationAccepted", "NotificationSent"]
    missing = part(client_package, "api.notifications.get_notification").sync("msg_" + "0" * 32, client=api)
    assert isinstance(missing, models.Problem) and missing.status == 404
    found = part(client_package, "api.notifications.search_notifications").sync(client=api, recipient="ada@example.com")
    assert isinstance(found, models.MessagePage) and [m.message_id for m in found.items] == [message_id]
    refused = part(client_package, "api.notifications.cancel_notification").sync(message_id, client=api)
    assert isinstance(refused, models.Problem) and refused.status == 409 and refused.current_status == "sent"

    body = models.PreviewRequest.from_dict({**otp(), "tenant_id": tenant, "priority": "high"})
    shown = part(client_package, "api.templates.preview").sync(client=api, body=body)
    assert isinstance(shown, models.PreviewResult) and "384921" in shown.parts["subject.txt"] + shown.parts["body.txt"]

    link = part(client_package, "api.links.create_shortlink").sync(
        client=api, body=models.ShortlinkRequest(url="https://example.com/x")
    )
    assert isinstance(link, models.Shortlink) and link.clicks == 0


def test_generated_client_platform_and_open_routes(herald: Herald, client_package: ModuleType) -> None:
    models = part(client_package, "models")
    platform = client_package.AuthenticatedClient(base_url=herald.base_url, token=herald.platform_token())
    queues = part(client_package, "api.admin.queues").sync(client=platform)
    assert isinstance(queues, models.PlatformQueues) and "notifications.high" in [q.queue for q in queues.queues]
    report = part(client_package, "api.admin.providers").sync(client=platform)
    assert isinstance(report, models.ProvidersPage) and report.providers and report.routing_table.revision >= 1
    tenant_admin = client_package.AuthenticatedClient(
        base_url=herald.base_url, token=herald.token(new_tenant(), admin=True)
    )
    own = part(client_package, "api.admin.queues").sync(client=tenant_admin)
    assert isinstance(own, models.TenantQueues) and own.waiting == 0
    dead = part(client_package, "api.dlq.list_dead_letters").sync(client=tenant_admin)
    assert isinstance(dead, models.DeadPage) and dead.counts.total == 0
    replay = part(client_package, "api.dlq.replay_dead_letters")
    nothing = replay.sync(client=tenant_admin, body=models.ReplayRequest(all_=True))
    assert isinstance(nothing, models.ReplayResult) and nothing.matched == 0
    health = part(client_package, "api.admin.healthz").sync(client=client_package.Client(base_url=herald.base_url))
    assert isinstance(health, models.Health) and health.status.value == "ok"
