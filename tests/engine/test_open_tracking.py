"""Open tracking without a database: pixel tokens, the GIF, its place in rendered email, and which user
agents count as people (recorded user agents of mail clients, image proxies, Apple's privacy proxy and
link scanners)."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from engine.channels import Channel
from engine.feedback.agents import AgentClass, classify_agent
from engine.templating import RenderContext, TemplateCatalog
from engine.templating.links import (
    open_url,
    sign_link,
    sign_open,
    sign_unsubscribe,
    verify_link,
    verify_open,
    verify_unsubscribe,
)
from engine.templating.pixel import PIXEL_HEADERS, TRANSPARENT_GIF, insert_pixel

TEMPLATES = Path(__file__).resolve().parents[2] / "templates"
SECRET = "s3cret-for-tests"

#: (user agent, address it came from, class, machine) as recorded in the wild.
RECORDED = [
    # Apple Mail Privacy Protection: the bare agent, from Apple's 17.0.0.0/8, or the bare agent alone.
    ("Mozilla/5.0", "17.58.101.12", AgentClass.APPLE_PRIVACY_PROXY, True),
    ("Mozilla/5.0", "203.0.113.9", AgentClass.APPLE_PRIVACY_PROXY, True),
    (
        "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko)",
        "17.123.4.5",
        AgentClass.APPLE_PRIVACY_PROXY,
        True,
    ),
    # The same desktop Apple Mail from a home address is a person reading.
    (
        "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko)",
        "81.2.69.142",
        AgentClass.MAIL_CLIENT,
        False,
    ),
    # Security gateways and link scanners.
    ("Mozilla/5.0 (compatible; Barracuda Sentinel (EE))", "64.235.150.1", AgentClass.SECURITY_SCANNER, True),
    (
        "Mozilla/5.0 (Windows NT 6.1; WOW64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/53.0 Safari/537.36 "
        "Proofpoint/1.0",
        "148.163.1.1",
        AgentClass.SECURITY_SCANNER,
        True,
    ),
    ("Mimecast URL Protect", "205.139.110.1", AgentClass.SECURITY_SCANNER, True),
    (
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) BingPreview/1.0b",
        None,
        AgentClass.SECURITY_SCANNER,
        True,
    ),
    ("python-requests/2.31.0", "34.201.1.1", AgentClass.BOT, True),
    ("curl/8.4.0", None, AgentClass.BOT, True),
    (
        "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) HeadlessChrome/119.0 Safari/537.36",
        None,
        AgentClass.BOT,
        True,
    ),
    ("", None, AgentClass.BOT, True),
    (None, None, AgentClass.BOT, True),
    # Webmail image proxies fetch when the reader opens the message: people.
    (
        "Mozilla/5.0 (Windows NT 5.1; rv:11.0) Gecko Firefox/11.0 (via ggpht.com GoogleImageProxy)",
        "66.102.6.229",
        AgentClass.IMAGE_PROXY,
        False,
    ),
    (
        "YahooMailProxy; https://help.yahoo.com/kb/yahoo-mail-proxy-SLN28749.html",
        "98.137.1.1",
        AgentClass.IMAGE_PROXY,
        False,
    ),
    # Mail clients, phones, browsers.
    (
        "Microsoft Office/16.0 (Windows NT 10.0; Microsoft Outlook 16.0.12026; Pro)",
        "81.2.69.1",
        AgentClass.MAIL_CLIENT,
        False,
    ),
    (
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:115.0) Gecko/20100101 Thunderbird/115.5.0",
        None,
        AgentClass.MAIL_CLIENT,
        False,
    ),
    (
        "Mozilla/5.0 (iPhone; CPU iPhone OS 10_3_3 like Mac OS X) AppleWebKit/603.3.8 (KHTML, like Gecko) Mobile/14G60",
        "81.2.69.2",
        AgentClass.MOBILE,
        False,
    ),
    (
        "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0 Mobile "
        "Safari/537.36",
        None,
        AgentClass.MOBILE,
        False,
    ),
    (
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/60.0.3112.90 "
        "Safari/537.36",
        "81.2.69.3",
        AgentClass.BROWSER,
        False,
    ),
]


@pytest.mark.parametrize(("agent", "ip", "expected", "machine"), RECORDED)
def test_recorded_user_agents(agent: str | None, ip: str | None, expected: AgentClass, machine: bool) -> None:
    verdict = classify_agent(agent, ip)
    assert (verdict.agent, verdict.machine) == (expected, machine)


def test_a_providers_own_verdict_wins() -> None:
    human_looking = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) Chrome/120.0 Safari/537.36"
    assert classify_agent(human_looking, "17.1.2.3", machine_hint=True).agent is AgentClass.APPLE_PRIVACY_PROXY
    assert classify_agent(human_looking, None, machine_hint=True).machine
    assert not classify_agent("Mozilla/5.0", "17.1.2.3", machine_hint=False).machine


def test_ipv4_mapped_apple_addresses_count() -> None:
    assert classify_agent("Mozilla/5.0 (Macintosh) AppleWebKit/605.1.15", "::ffff:17.0.0.1").machine


def test_the_pixel_is_a_43_byte_transparent_gif() -> None:
    assert len(TRANSPARENT_GIF) == 43
    assert TRANSPARENT_GIF.startswith(b"GIF89a") and TRANSPARENT_GIF.endswith(b";")
    assert struct.unpack("<HH", TRANSPARENT_GIF[6:10]) == (1, 1)
    assert TRANSPARENT_GIF[19:22] == b"\x21\xf9\x04" and TRANSPARENT_GIF[22] & 1  # transparency flag
    assert "no-store" in PIXEL_HEADERS["Cache-Control"]


def test_open_tokens_are_signed_and_of_their_own_kind() -> None:
    token = sign_open(SECRET, "t_001", "msg_" + "a" * 32)
    target = verify_open(SECRET, token + ".gif")
    assert target is not None and (target.tenant, target.message_id) == ("t_001", "msg_" + "a" * 32)
    assert verify_open(SECRET, token) == target
    assert verify_open("another secret", token) is None
    assert verify_open(SECRET, token[:-2] + ("A" if token[-2] != "A" else "B") + token[-1]) is None
    assert verify_link(SECRET, token) is None and verify_unsubscribe(SECRET, token) is None
    assert verify_open(SECRET, sign_link(SECRET, "t_001", "msg_x", "https://x.example")) is None
    assert open_url("https://h.example/", token) == f"https://h.example/t/o/{token}.gif"


def test_unsubscribe_tokens_carry_the_category() -> None:
    with_category = verify_unsubscribe(SECRET, sign_unsubscribe(SECRET, "t_1", "a@x.example", category="marketing"))
    assert with_category is not None and with_category.category == "marketing"
    legacy = verify_unsubscribe(SECRET, sign_unsubscribe(SECRET, "t_1", "a@x.example"))
    assert legacy is not None and legacy.category is None and legacy.address == "a@x.example"


def test_the_pixel_goes_before_the_last_body_end() -> None:
    url = "https://h.example/t/o/abc.gif"
    doc = insert_pixel("<html><body><p>Hi</p></BODY></html>", url)
    assert doc.index('src="https://h.example/t/o/abc.gif"') < doc.index("</BODY>")
    assert insert_pixel("<p>fragment</p>", url).endswith('border:0;" />')


def test_tracked_html_email_gets_the_pixel_and_its_text_part_does_not() -> None:
    catalog = TemplateCatalog(TEMPLATES)
    resolved = catalog.resolve("otp_login:v3", locale="en", channel=Channel.EMAIL)
    variables = {"code": "123456"}
    ctx = RenderContext(
        tenant="t_001", message_id="msg_" + "b" * 32, tracking=True, base_url="https://h.example", link_secret=SECRET
    )
    tracked = catalog.render(resolved, variables, Channel.EMAIL, context=ctx)
    assert tracked.html is not None and "/t/o/" in tracked.html and "/t/o/" not in (tracked.text or "")
    src = tracked.html.split('src="https://h.example/t/o/', 1)[1].split('"', 1)[0]
    target = verify_open(SECRET, src)
    assert target is not None and target.message_id == "msg_" + "b" * 32
    untracked = catalog.render(resolved, variables, Channel.EMAIL, context=RenderContext(tenant="t_001"))
    assert "/t/o/" not in (untracked.html or "")
