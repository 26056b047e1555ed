"""The request limits middleware on the real application object, without Ray (httpx's ASGI transport)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, Request, Response

from engine.errors import ConfigurationError
from serve_app.http import create_app
from serve_app.limits import MAX_JSON_DEPTH, RequestLimitMiddleware, RequestLimits

MIB = 1024 * 1024


def echo_app(limits: RequestLimits | None = None) -> FastAPI:
    """Herald's app object (so its middleware and error rendering) with routes that parse like the real ones."""
    app = create_app()
    if limits is not None:  # swap the configured limits for the test's own
        app.user_middleware.clear()
        app.add_middleware(RequestLimitMiddleware, limits=limits)

    @app.post("/{path:path}")
    async def echo(path: str, request: Request) -> Response:
        raw = await request.body()
        return Response(raw, media_type="application/octet-stream", headers={"X-Path": path})

    @app.get("/{path:path}")
    async def show(path: str) -> dict[str, Any]:
        return {"path": path}

    return app


@pytest.fixture
async def api() -> AsyncIterator[httpx.AsyncClient]:
    limits = RequestLimits(max_bytes=4096, routes={"/api/batch": 16384, "/webhooks/": 8192})
    async with httpx.AsyncClient(transport=httpx.ASGITransport(echo_app(limits)), base_url="http://t") as client:
        yield client


def assert_problem(r: httpx.Response, status: int) -> dict[str, Any]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/problem+json"
    doc: dict[str, Any] = r.json()
    assert doc["status"] == status and doc["type"] == "about:blank" and doc["title"] and doc["detail"]
    return doc


def nested(levels: int) -> bytes:
    return b"[" * levels + b"]" * levels


async def chunked(total: int, size: int = 1000) -> AsyncIterator[bytes]:
    sent = 0
    while sent < total:
        n = min(size, total - sent)
        sent += n
        yield b"x" * n


async def test_create_app_bounds_bodies_at_one_mib_by_default() -> None:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(echo_app()), base_url="http://t") as client:
        doc = assert_problem(await client.post("/api/notifications", content=b"x" * (MIB + 1)), 413)
        assert doc["detail"] == f"the request body is larger than {MIB} bytes"
        assert doc["instance"] == "/api/notifications"
        assert (await client.post("/api/notifications", content=b"x" * MIB)).status_code == 200
        assert_problem(await client.post("/api/preview", content=nested(100_000)), 400)


def test_the_limit_is_a_setting_naming_its_variable() -> None:
    assert RequestLimits.from_env({}).max_bytes == MIB
    assert RequestLimits.from_env({"HERALD_MAX_BODY_BYTES": "2048"}).max_bytes == 2048
    for bad in ("lots", "10"):
        with pytest.raises(ConfigurationError, match="HERALD_MAX_BODY_BYTES"):
            RequestLimits.from_env({"HERALD_MAX_BODY_BYTES": bad})


def test_a_route_prefix_takes_its_own_limit() -> None:
    limits = RequestLimits(max_bytes=10, routes={"/api/batch": 100, "/webhooks/": 50, "/webhooks/sms": 70})
    assert limits.for_path("/api/notifications") == 10
    assert limits.for_path("/api/batch") == 100 and limits.for_path("/api/batch/x") == 100
    assert limits.for_path("/api/batches") == 10
    assert limits.for_path("/webhooks/email/ses") == 50 and limits.for_path("/webhooks/sms/twilio") == 70


async def test_declared_and_chunked_bodies_over_the_limit_are_413(api: httpx.AsyncClient) -> None:
    assert (await api.post("/api/notifications", content=b"x" * 4096)).content == b"x" * 4096
    r = await api.post("/api/notifications", content=b"x" * 4097)
    assert_problem(r, 413)
    assert r.headers["connection"] == "close"
    assert_problem(await api.post("/api/notifications", content=chunked(4097)), 413)
    assert (await api.post("/api/notifications", content=chunked(4096))).content == b"x" * 4096
    # Larger limits by prefix, for both forms.
    assert (await api.post("/api/batch", content=b"x" * 16384)).status_code == 200
    assert (await api.post("/api/batch/items", content=chunked(16000))).status_code == 200
    assert_problem(await api.post("/api/batch", content=chunked(16385)), 413)
    assert_problem(await api.post("/api/batches", content=b"x" * 5000), 413)
    assert (await api.post("/webhooks/sms/twilio", content=b"a=1&" * 2000)).status_code == 200


async def test_json_nesting_is_bounded_for_any_content_type(api: httpx.AsyncClient) -> None:
    ok = await api.post("/api/preview", content=nested(MAX_JSON_DEPTH), headers={"Content-Type": "application/json"})
    assert ok.status_code == 200 and ok.content == nested(MAX_JSON_DEPTH)
    for content_type in ("application/json", "text/plain", "application/x-www-form-urlencoded", ""):
        r = await api.post("/api/preview", content=nested(MAX_JSON_DEPTH + 1), headers={"Content-Type": content_type})
        assert "nested deeper than 64" in assert_problem(r, 400)["detail"]
    objects = b'{"a":' * 65 + b"1" + b"}" * 65
    assert_problem(await api.post("/api/notifications", content=objects), 400)
    mixed = json.dumps({"to": {"a": [{"b": [[{"c": 1}]]}]}, "v": [[[[[]]]]]}).encode()
    assert (await api.post("/api/notifications", content=mixed)).content == mixed
    assert_problem(await api.post("/api/notifications", content=b'{"v": ' + nested(2000) + b"}"), 400)


@pytest.mark.parametrize(
    ("body", "loc"),
    [
        (b'{"variables": {"code": "12\\u00003"}}', ["body", "variables", "code"]),
        (b'{"to": {"name": "\\ud800"}}', ["body", "to", "name"]),
        (b'{"to": {"name": "\xed\xa0\x80"}}', ["body", "to", "name"]),  # an encoded lone surrogate
        (b'{"variables": {"\\udfff": 1}}', ["body", "variables", "\\udfff"]),
        (b'{"variables": {"n\\u0000": 1}}', ["body", "variables", "n\\x00"]),
        (b'{"variables": {"caf\xc3\xa9": "\\ud800"}}', ["body", "variables", "caf\u00e9"]),
        (b'{"variables": {"x": NaN}}', ["body", "variables", "x"]),
        (b'{"variables": {"x": [1, -Infinity]}}', ["body", "variables", "x", 1]),
        (b'{"ttl_seconds": 1e999}', ["body", "ttl_seconds"]),
    ],
)
async def test_values_postgres_cannot_store_are_422_naming_the_field(
    api: httpx.AsyncClient, body: bytes, loc: list[Any]
) -> None:
    doc = assert_problem(await api.post("/api/notifications", content=body), 422)
    assert [e["loc"] for e in doc["errors"]] == [loc]


async def test_a_paired_surrogate_is_an_ordinary_character(api: httpx.AsyncClient) -> None:
    body = b'{"to": {"name": "Ada \\ud83d\\ude00"}}'
    assert (await api.post("/api/notifications", content=body)).content == body


async def test_integers_past_pythons_conversion_limit_are_400(api: httpx.AsyncClient) -> None:
    doc = assert_problem(await api.post("/api/batch", content=b'{"n": ' + b"9" * 4301 + b"}"), 400)
    assert doc["detail"] == "the JSON body holds an integer longer than 4300 digits"
    fits = b'{"n": ' + b"9" * 4000 + b"}"
    assert (await api.post("/api/batch", content=fits)).content == fits


@pytest.mark.parametrize(
    "body", [b"", b"{not json", b"\xff\xfe\xfa", b"a=1&b=2", b"--x\r\nContent-Disposition: form-data\r\n"]
)
async def test_bodies_that_are_not_json_reach_the_route_unchanged(api: httpx.AsyncClient, body: bytes) -> None:
    r = await api.post("/api/notifications", content=body)
    assert r.status_code == 200 and r.content == body


async def test_nul_in_the_path_is_404_and_in_the_query_400(api: httpx.AsyncClient) -> None:
    assert_problem(await api.get("/api/notifications/%00"), 404)
    assert_problem(await api.post("/api/inbox/a%00b", content=b"{}"), 404)
    assert_problem(await api.get("/api/inbox/u?limit=%00"), 400)
    assert (await api.get("/api/inbox/u?limit=5")).json() == {"path": "api/inbox/u"}


async def test_a_request_without_a_body_is_passed_on_without_reading() -> None:
    seen: list[str] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen.append(scope["path"])
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    async def never(*_: Any) -> Any:
        raise AssertionError("receive() called for a request without a body")

    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "GET", "path": "/admin/healthz", "headers": [], "query_string": b""}
    await RequestLimitMiddleware(app)(scope, never, send)
    assert seen == ["/admin/healthz"] and sent[0]["status"] == 204


async def test_a_client_that_leaves_mid_body_gets_no_answer() -> None:
    messages = iter([{"type": "http.request", "body": b"{", "more_body": True}, {"type": "http.disconnect"}])

    async def receive() -> Any:
        return next(messages)

    async def app(*_: Any) -> None:
        raise AssertionError("the route was called")

    sent: list[Any] = []

    async def send(message: Any) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": "/x", "headers": [(b"transfer-encoding", b"chunked")]}
    await RequestLimitMiddleware(app)(scope, receive, send)
    assert sent == []


def test_batches_have_their_own_limit_and_check_their_items_themselves() -> None:
    from serve_app.limits import BATCH_MAX_BODY_BYTES

    limits = RequestLimits.from_env({})
    assert limits.for_path("/api/batch") == BATCH_MAX_BODY_BYTES == 32 * MIB
    assert limits.for_path("/api/batches/bat_x") == MIB
    assert not limits.checks_json("/api/batch") and limits.checks_json("/api/batches/bat_x")


async def test_a_batch_body_is_only_size_limited_here() -> None:
    limits = RequestLimits(max_bytes=4096, routes={"/api/batch": 16384}, unchecked=frozenset({"/api/batch"}))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(echo_app(limits)), base_url="http://t") as client:
        bad_item = json.dumps([{"a": "\u0000"}, {"b": 1}]).encode()
        assert (await client.post("/api/batch", content=bad_item)).status_code == 200  # the route's to judge
        assert_problem(await client.post("/api/notifications", content=bad_item), 422)
        assert_problem(await client.post("/api/batch", content=b"x" * 16385), 413)


async def _over_limit(headers: list[tuple[bytes, bytes]], chunks: int, chunk: bytes) -> tuple[int, list[Any]]:
    """How many of ``chunks`` the middleware had read when it answered, and what it sent."""
    read = 0
    answered_after: list[int] = []

    async def receive() -> Any:
        nonlocal read
        read += 1
        return {"type": "http.request", "body": chunk, "more_body": read < chunks}

    async def app(*_: Any) -> None:
        raise AssertionError("the route was called")

    sent: list[Any] = []

    async def send(message: Any) -> None:
        if not answered_after:
            answered_after.append(read)
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": "/api/notifications", "headers": headers, "query_string": b""}
    await RequestLimitMiddleware(app, limits=RequestLimits(max_bytes=4096))(scope, receive, send)
    return answered_after[0], sent


async def test_an_over_limit_body_is_read_to_its_end_before_the_413() -> None:
    # Answered while the client still sends, the connection's close would reset it and could lose the answer.
    declared = [(b"content-length", b"10000")]
    answered_after, sent = await _over_limit(declared, 10, b"x" * 1000)
    assert answered_after == 10 and sent[0]["status"] == 413
    answered_after, sent = await _over_limit([(b"transfer-encoding", b"chunked")], 10, b"x" * 1000)
    assert answered_after == 10 and sent[0]["status"] == 413


async def test_a_body_far_past_the_limit_is_answered_without_reading_it_all() -> None:
    far = [(b"content-length", str(4096 + 9 * MIB).encode())]
    answered_after, sent = await _over_limit(far, 10_000, b"x" * 1000)
    assert answered_after == 0 and sent[0]["status"] == 413
    answered_after, sent = await _over_limit([(b"transfer-encoding", b"chunked")], 100_000, b"x" * 1000)
    assert 8 * MIB // 1000 <= answered_after < 100_000 and sent[0]["status"] == 413
