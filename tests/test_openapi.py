"""The OpenAPI document is the contract clients are generated from: valid, typed, with security named.

Built in-process from the routers (no Ray, no services): the document does not depend on the stack.
"""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient
from openapi_spec_validator import validate

from engine.problems import PROBLEM_CONTENT_TYPE
from serve_app.routes import build_app

#: Operations anyone may call (bind them to an internal interface in production, or they are links in emails).
OPEN = {"healthz", "follow_link", "unsubscribe", "unsubscribe_page", "open_pixel", "meta_verification"}
#: Their answers are not JSON.
NOT_JSON = {
    "metrics",
    "follow_link",
    "unsubscribe",
    "unsubscribe_page",
    "open_pixel",
    "meta_verification",
    "sms_twilio_inbound",  # TwiML
}
TENANT_SCOPES = {"send", "read", "templates", "admin"}
#: Provider webhooks: authenticated by the provider's signature (one of these schemes), not a token.
WEBHOOKS = {
    "email_webhook": {"sendgrid_signature", "sns_signature"},
    "sms_twilio_webhook": {"twilio_signature"},
    "sms_twilio_inbound": {"twilio_signature"},
    "whatsapp_webhook": {"meta_signature", "twilio_signature"},
}
#: POST operations that take no body.
NO_BODY = {
    "publish_template",
    "unsubscribe",
    "enable_webhook_endpoint",
    "test_webhook_endpoint",
    "rotate_webhook_secret",
    "rotate_ingress_key",
    "reload_routing",
    "rotate_unsubscribe_key",
}


@pytest.fixture(scope="module")
def doc() -> dict[str, Any]:
    return build_app().openapi()


def operations(doc: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [(path, method, op) for path, ops in doc["paths"].items() for method, op in ops.items()]


def test_the_document_is_valid_openapi(doc: dict[str, Any]) -> None:
    validate(doc)
    assert doc["openapi"].startswith("3.1")
    assert "HTTPValidationError" not in doc["components"]["schemas"]  # our 422s are problem+json


def test_every_operation_names_its_security_and_scope(doc: dict[str, Any]) -> None:
    assert doc["components"]["securitySchemes"]["bearer"] == {
        "type": "http",
        "scheme": "bearer",
        "bearerFormat": "JWT",
        "description": doc["components"]["securitySchemes"]["bearer"]["description"],
    }
    for path, method, op in operations(doc):
        security = op.get("security")
        assert security is not None, f"{method} {path} names no security requirement"
        if op["operationId"] in OPEN:
            assert security == [], f"{method} {path}"
            continue
        if op["operationId"] in WEBHOOKS:
            schemes = {name for requirement in security for name in requirement}
            assert schemes == WEBHOOKS[op["operationId"]], f"{method} {path}: {security}"
            assert all(doc["components"]["securitySchemes"][name]["type"] == "apiKey" for name in schemes)
            assert {"401", "403"} <= set(op["responses"]), f"{method} {path}"
            continue
        scopes = {scope for requirement in security for scope in requirement["bearer"]}
        assert scopes and scopes <= TENANT_SCOPES | {"platform"}, f"{method} {path}: {security}"
        assert "401" in op["responses"] and "403" in op["responses"], f"{method} {path}"
    queues = doc["paths"]["/admin/queues"]["get"]["security"]
    assert {"bearer": ["admin"]} in queues and {"bearer": ["platform"]} in queues
    assert doc["paths"]["/admin/providers"]["get"]["security"] == [{"bearer": ["platform"]}]


def test_every_body_and_answer_has_a_schema(doc: dict[str, Any]) -> None:
    for path, method, op in operations(doc):
        if op["operationId"] in WEBHOOKS:
            assert all(c["schema"] for c in op["requestBody"]["content"].values()), f"{method} {path}"
            assert {"400", "413", "502", "503"} <= set(op["responses"]), f"{method} {path}"
        elif method in ("post", "put", "patch") and op["operationId"] not in NO_BODY:
            body = op["requestBody"]["content"]["application/json"]["schema"]
            assert "$ref" in body, f"{method} {path} reads an undeclared body"
            assert {"400", "413", "422"} <= set(op["responses"]), f"{method} {path}: not JSON, too large, invalid"
        for status, response in op["responses"].items():
            content = response.get("content", {})
            if status.startswith(("4", "5")) and PROBLEM_CONTENT_TYPE in content:
                problem = content[PROBLEM_CONTENT_TYPE]
                assert problem["schema"] == {"$ref": "#/components/schemas/Problem"} and problem["example"]
                continue
            if status == "204":
                assert not content, f"{method} {path}: a 204 has no body"
            elif status.startswith("2") and op["operationId"] not in NOT_JSON:
                schema = content["application/json"]["schema"]
                assert schema.get("$ref") or schema.get("oneOf") or schema.get("anyOf"), f"{method} {path} {status}"
            elif not status.startswith(("2", "3")):
                front_door = status == "400" and "text/html" in content and "front door" in response["description"]
                assert front_door or (op["operationId"] == "healthz" and status == "503"), f"{method} {path} {status}"


def test_preview_takes_the_notification_body(doc: dict[str, Any]) -> None:
    schemas = doc["components"]["schemas"]
    preview, notification = schemas["PreviewRequest"]["properties"], schemas["NotificationRequest"]["properties"]
    assert set(preview) == set(notification)
    assert "to" not in schemas["PreviewRequest"].get("required", [])


def test_docs_are_served_by_herald_itself() -> None:
    with TestClient(build_app()) as client:
        page = client.get("/docs")
        assert page.status_code == 200
        assert "cdn" not in page.text.lower() and "https://" not in page.text
        for asset in ("/docs/assets/swagger-ui-bundle.js", "/docs/assets/swagger-ui.css"):
            r = client.get(asset)
            assert r.status_code == 200 and len(r.content) > 10_000, asset
        assert client.get("/openapi.json").json()["info"]["title"] == "Herald"
