"""Recipients are judged at admission: a number no provider would take is a 422, not a later failure."""

from __future__ import annotations

import pytest

from tests.e2e.conftest import Herald
from tests.e2e.test_api import new_tenant, post

pytestmark = [pytest.mark.ray, pytest.mark.integration]


def sms(phone: str) -> dict[str, object]:
    return {"channel": "sms", "template_id": "otp_login", "to": {"phone": phone}, "variables": {"code": "314159"}}


@pytest.mark.parametrize("channel", ["sms", "whatsapp"])
def test_a_number_in_a_drama_range_is_422_naming_to_phone(herald: Herald, channel: str) -> None:
    with herald.client(new_tenant()) as api:
        r = post(api, {**sms("+447700900123"), "channel": channel})
    assert r.status_code == 422, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    errors = r.json()["errors"]
    assert [e["loc"] for e in errors] == [["body", "to", "phone"]]
    assert "not a valid phone number" in errors[0]["msg"] and "(+44, GB)" in errors[0]["msg"]
    assert "7700900123" not in r.text


def test_a_valid_number_is_admitted_in_e164_and_sent(herald: Herald) -> None:
    with herald.client(new_tenant()) as api:
        r = post(api, sms("+1 (415) 555-0171"))
        assert r.status_code == 202, r.text
        view = herald.wait_status(api, r.json()["message_id"], lambda s: s == "sent")
    record = next(x for x in herald.console_records() if x["message_id"] == view["message_id"])
    assert record["to"] == "+14155550171" and "314159" in record["text"]
