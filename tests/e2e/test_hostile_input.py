"""Hostile bodies, headers and paths against the real stack: always a 4xx problem, never a 5xx."""

from __future__ import annotations

import socket
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import Herald
from tests.e2e.test_api import new_tenant, otp, post

pytestmark = [pytest.mark.ray, pytest.mark.integration]

MIB = 1024 * 1024
DEEP = b"[" * 100_000 + b"]" * 100_000


def problem(r: httpx.Response, status: int) -> dict[str, Any]:
    assert r.status_code == status, (r.status_code, r.text[:300])
    assert r.headers["content-type"].startswith("application/problem+json"), r.headers
    doc: dict[str, Any] = r.json()
    assert doc["status"] == status and doc["title"] and doc["detail"]
    return doc


def headers(**extra: str) -> dict[str, str]:
    return {"Idempotency-Key": uuid.uuid4().hex, "Content-Type": "application/json", **extra}


@pytest.mark.parametrize("path", ["/api/notifications", "/api/preview"])
def test_deeply_nested_json_is_400_before_parsing(herald: Herald, path: str) -> None:
    with herald.client(new_tenant()) as api:
        doc = problem(api.post(path, content=DEEP, headers=headers()), 400)
        assert "nested" in doc["detail"]
        wrapped = b'{"channel": "email", "variables": {"v": ' + DEEP + b"}}"
        problem(api.post(path, content=wrapped, headers=headers()), 400)
        # Any content type: the routes parse what they are given as JSON.
        problem(api.post(path, content=DEEP, headers=headers(**{"Content-Type": "text/plain"})), 400)


def test_nesting_within_the_bound_is_admitted(herald: Herald) -> None:
    nested: Any = "deep"
    for _ in range(40):
        nested = {"n": nested}
    with herald.client(new_tenant()) as api:
        r = post(api, otp(variables={"code": "123456", "extra": nested}))
    assert r.status_code == 202, r.text


def test_a_body_over_the_limit_is_413_with_content_length_or_chunked(herald: Herald) -> None:
    big = b'{"pad": "' + b"x" * MIB + b'"}'
    with herald.client(new_tenant()) as api:
        doc = problem(api.post("/api/notifications", content=big, headers=headers()), 413)
        assert str(MIB) in doc["detail"]

        def chunks() -> Iterator[bytes]:
            yield b'{"pad": "'
            for _ in range(20):
                yield b"x" * 65536
            yield b'"}'

        problem(api.post("/api/preview", content=chunks(), headers=headers()), 413)
        # Just under the limit is read and judged as usual (422: not a notification).
        fits = b'{"pad": "' + b"x" * (MIB - 100) + b'"}'
        problem(api.post("/api/notifications", content=fits, headers=headers()), 422)


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"\xff\xfe\xfa not utf-8",
        b'{"channel": "email", "template_id": "otp_login", "to": {"email": "\xc3\x28@example.com"}}',
        b"\x00" * 64,
        b"null",
        b"[]",
        b'"just a string"',
        b"1e999999",
        b'{"a": NaN}',
        b'{"a": ' + b"9" * 5000 + b"}",
        b'{"to": {"phone": "' + b"9" * 10000 + b'"}}',
        b'{"channel": "\\ud800", "template_id": "\\udfff"}',
        b'{"idempotency_key": {"a": 1}, "channel": ["email"]}',
    ],
    ids=lambda b: repr(b[:24]),
)
@pytest.mark.parametrize("path", ["/api/notifications", "/api/preview", "/api/shortlinks"])
def test_odd_bodies_are_4xx(herald: Herald, path: str, body: bytes) -> None:
    with herald.client(new_tenant()) as api:
        r = api.post(path, content=body, headers=headers())
    assert 400 <= r.status_code < 500, (r.status_code, r.text[:300])
    problem(r, r.status_code)


@pytest.mark.parametrize(
    "content_type",
    ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x", "application/xml", ""],
)
def test_wrong_content_types_are_4xx(herald: Herald, content_type: str) -> None:
    with herald.client(new_tenant()) as api:
        r = api.post("/api/notifications", content=b"a=1&b=2", headers=headers(**{"Content-Type": content_type}))
        assert 400 <= r.status_code < 500, (r.status_code, r.text[:300])
        if content_type:  # named, rather than "the body is not an object"
            assert r.status_code == 415 and "application/json" in r.json()["detail"], r.text


@pytest.mark.parametrize(
    "path",
    [
        "/api/notifications/%00",
        "/api/notifications/msg_%00%00",
        "/api/notifications/%ff%fe",
        "/api/notifications/" + "a" * 4000,
        "/api/notifications/msg_" + "f" * 4000,
        "/api/notifications/..%2F..%2Fadmin%2Fqueues",
        "/api/templates/%00/versions/1",
        "/api/templates/otp_login/versions/99999999999999999999999",
        "/api/templates/otp_login/versions/-1",
        "/api/templates/" + "t" * 3000,
        "/api/shortlinks/%00",
        "/api/shortlinks/" + "s" * 4000,
        "/api/inbox/%00",
        "/api/inbox/" + "u" * 4000,
        "/api/inbox/u?limit=99999999999999999999",
        "/api/inbox/u?limit=-5",
        "/l/%00",
        "/l/" + "x" * 4000,
        "/u/%00",
        "/u/" + "y" * 4000,
        "/no/such/route",
    ],
    ids=lambda p: p[:40],
)
def test_odd_paths_are_4xx(herald: Herald, path: str) -> None:
    with herald.client(new_tenant()) as api:
        r = api.get(path)
    assert r.status_code < 500, (r.status_code, r.text[:300])
    if r.status_code >= 400:
        problem(r, r.status_code)


@pytest.mark.parametrize(
    "path",
    ["/u/%00", "/u/" + "z" * 4000, "/api/templates/%00/publish", "/api/templates/%ff/rollback"],
    ids=lambda p: p[:30],
)
def test_odd_paths_on_writes_are_4xx(herald: Herald, path: str) -> None:
    with herald.client(new_tenant()) as api:
        r = api.post(path, json={"version": 1})
    assert 400 <= r.status_code < 500, (r.status_code, r.text[:300])


@pytest.mark.parametrize(
    "extra",
    [
        {"Authorization": b"Bearer " + b"a" * 6000},
        {"Authorization": b"Bearer a.b.c"},
        {"Authorization": b"Bearer \xff\xfe.\xe9.x"},
        {"Authorization": b"Basic dXNlcjpwYXNz"},
        {"Authorization": b"Bearer"},
        {"Idempotency-Key": b"k" * 6000},
        {"Idempotency-Key": b"\xe9\xff\xfe"},
        {"Idempotency-Key": b""},
        {"Content-Type": b"application/json; charset=utf-16"},
        {"Content-Type": b"\xff/\xfe"},
        {"Accept": b"\xff" * 100},
        {"X-Odd": b"x" * 7000},
    ],
    ids=lambda h: f"{next(iter(h))}:{next(iter(h.values()))[:12]!r}",
)
def test_odd_headers_are_4xx_or_handled(herald: Herald, extra: dict[str, bytes]) -> None:
    tenant = new_tenant()
    hdrs: dict[str, bytes] = {
        "Authorization": f"Bearer {herald.token(tenant)}".encode(),
        "Idempotency-Key": uuid.uuid4().hex.encode(),
        **extra,
    }
    with herald.client() as api:
        r = api.post("/api/notifications", json=otp(), headers=hdrs)
    assert r.status_code < 500, (r.status_code, r.text[:300])


def raw_request(herald: Herald, head: bytes, body: bytes = b"") -> bytes:
    """One request written as bytes (what httpx will not send), and the server's answer."""
    with socket.create_connection((herald.settings.http_host, herald.settings.http_port), timeout=30) as conn:
        conn.sendall(head + b"\r\n\r\n" + body)
        received = b""
        while b"\r\n\r\n" not in received:
            chunk = conn.recv(65536)
            if not chunk:
                break
            received += chunk
    return received


def test_raw_heads_with_lying_lengths_and_odd_bytes_are_4xx(herald: Herald) -> None:
    token = herald.token(new_tenant()).encode()
    auth = b"Authorization: Bearer " + token
    cases = [
        # Declares 3 bytes of a longer body: the route sees '{"c' and the rest is not a request.
        (b"POST /api/notifications HTTP/1.1\r\nHost: x\r\n" + auth + b"\r\nContent-Length: 3", b'{"channel": 1}'),
        (b"POST /api/preview HTTP/1.1\r\nHost: x\r\n" + auth + b"\r\nContent-Type: \xc3\x28\xa0", b"{}"),
        (b"GET /api/notifications/msg_\xc3\x28 HTTP/1.1\r\nHost: x\r\n" + auth, b""),
        (b"GET /api/inbox/\xff\xfe HTTP/1.1\r\nHost: x\r\n" + auth, b""),
    ]
    for head, body in cases:
        if b"Content-Length" not in head and body:
            head += b"\r\nContent-Length: " + str(len(body)).encode()
        answer = raw_request(herald, head, body)
        status = int(answer.split(b" ", 2)[1]) if answer.startswith(b"HTTP/") else 0
        assert 400 <= status < 500, (head, answer[:300])


def test_values_postgres_cannot_store_are_422_not_500(herald: Herald) -> None:
    cases = [
        (b'"variables": {"code": "12\\u00003"}', ["body", "variables", "code"]),
        (b'"variables": {"code": "1", "x": "\\ud800"}', ["body", "variables", "x"]),
        (b'"variables": {"code": "1", "x": NaN}', ["body", "variables", "x"]),
        (b'"variables": {"code": "1", "x": 1e999}', ["body", "variables", "x"]),
        (b'"variables": {"code": "1"}, "idempotency_key": "k\\u0000"', ["body", "idempotency_key"]),
    ]
    start = b'{"channel": "email", "template_id": "otp_login", "to": {"email": "a@example.com"}, '
    with herald.client(new_tenant()) as api:
        for fields, loc in cases:
            r = api.post("/api/notifications", content=start + fields + b"}", headers=headers())
            assert loc in [e["loc"] for e in problem(r, 422)["errors"]], r.text
        preview = b'{"template_id": "otp_login", "channel": "email", "variables": {"code": "\\u0000"}}'
        problem(api.post("/api/preview", content=preview, headers=headers()), 422)
        problem(api.post("/api/templates/otp_login/rollback", json={"version": 10**30}), 422)


@pytest.mark.parametrize("method", ["PATCH", "DELETE", "PUT", "OPTIONS", "TRACE"])
def test_unexpected_methods_are_4xx(herald: Herald, method: str) -> None:
    with herald.client(new_tenant()) as api:
        r = api.request(method, "/api/notifications", content=DEEP, headers=headers())
    assert 400 <= r.status_code < 500, (r.status_code, r.text[:300])


def test_huge_headers_are_refused_without_a_5xx(herald: Herald) -> None:
    with herald.client(new_tenant()) as api:
        try:
            r = api.post("/api/notifications", json=otp(), headers={"X-Huge": "h" * 200_000})
        except httpx.RemoteProtocolError:
            return  # the server closed the connection on an oversized head: also not a 5xx
        assert 400 <= r.status_code < 500, (r.status_code, r.text[:300])
        many = {f"X-H-{i}": "v" * 50 for i in range(300)}
        try:
            r = api.post("/api/notifications", json=otp(), headers=many)
        except httpx.RemoteProtocolError:
            return
        assert r.status_code < 500, (r.status_code, r.text[:300])


def test_the_stack_still_serves_after_the_hostile_requests(herald: Herald) -> None:
    with herald.client(new_tenant()) as api:
        r = post(api, otp("after.hostile@example.com"))
        assert r.status_code == 202, r.text
        herald.wait_status(api, r.json()["message_id"], lambda s: s == "sent")


def test_times_at_the_ends_of_the_calendar_are_422_naming_the_field(herald: Herald) -> None:
    tenant = new_tenant()
    with herald.client(tenant) as api:
        for at, ttl in (
            ("9999-12-31T23:00:00Z", 3600),
            ("9999-12-31T23:59:59-14:00", None),
            ("0001-01-01T00:00:00+14:00", None),
        ):
            body = otp(schedule_at=at, **({"ttl_seconds": ttl} if ttl else {}))
            doc = problem(post(api, body), 422)
            assert ["body", "schedule_at"] in [e["loc"] for e in doc["errors"]], doc
        good, bad = (
            otp("good@example.com", idempotency_key=uuid.uuid4().hex),
            otp(schedule_at="9999-12-31T23:59:59Z", ttl_seconds=3600, idempotency_key=uuid.uuid4().hex),
        )
        batch = api.post("/api/batch", json=[good, bad])
        assert batch.status_code == 202, batch.text  # one bad item never refuses the others
        items = batch.json()["items"]
        assert [i["code"] for i in items] == [202, 422]
        assert ["body", 1, "schedule_at"] in [e["loc"] for e in items[1]["errors"]]
        for query in ("created_after=0001-01-01T00:00:00%2B14:00", "created_before=9999-12-31T23:59:59-14:00"):
            doc = problem(api.get(f"/api/notifications?{query}"), 422)
            assert query.split("=")[0] in str(doc["errors"]), doc
        scheduled = post(api, otp("later@example.com", schedule_at="2999-01-01T00:00:00Z", ttl_seconds=3600))
        assert scheduled.status_code == 202, scheduled.text
        moved = api.patch(
            f"/api/notifications/{scheduled.json()['message_id']}", json={"schedule_at": "9999-12-31T23:30:00Z"}
        )
        assert ["body", "schedule_at"] in [e["loc"] for e in problem(moved, 422)["errors"]]
        assert api.delete(f"/api/notifications/{scheduled.json()['message_id']}").status_code == 200
    with httpx.Client(
        base_url=herald.base_url, headers={"Authorization": f"Bearer {herald.token(tenant, admin=True)}"}
    ) as admin:
        problem(admin.get("/admin/dlq?dead_after=0001-01-01T00:00:00%2B01:00"), 422)
        replay = admin.post("/admin/dlq/replay", json={"filter": {"dead_after": "0001-01-01T00:00:00+01:00"}})
        problem(replay, 422)


def test_a_bool_or_a_string_where_a_number_or_a_bool_goes_is_422_not_coerced(herald: Herald) -> None:
    tenant = new_tenant()
    with httpx.Client(
        base_url=herald.base_url, headers={"Authorization": f"Bearer {herald.token(tenant, admin=True)}"}, timeout=30
    ) as api:
        for ttl in (True, "300", 300.5):
            doc = problem(post(api, otp(ttl_seconds=ttl)), 422)
            assert ["body", "ttl_seconds"] in [e["loc"] for e in doc["errors"]], doc
        assert post(api, otp(ttl_seconds=300)).status_code == 202
        key = api.post("/api/keys", json={"name": "c", "scopes": ["read"], "test_mode": "on"})
        assert ["body", "test_mode"] in [e["loc"] for e in problem(key, 422)["errors"]]
        rollback = api.post("/api/templates/otp_login/rollback", json={"version": True})
        assert ["body", "version"] in [e["loc"] for e in problem(rollback, 422)["errors"]]
        replay = api.post("/admin/dlq/replay", json={"all": "yes"})
        assert ["body", "all"] in [e["loc"] for e in problem(replay, 422)["errors"]]
