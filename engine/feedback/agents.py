"""Who fetched an open pixel or followed a tracked link: a person's mail client, or a machine.

Two kinds of machine open or click inflate engagement figures and are kept out of the human rates:

- Apple Mail Privacy Protection downloads every remote image of a message through Apple's proxies as
  soon as the message reaches the device, read or not. Those requests come from Apple's network
  (17.0.0.0/8) and present a bare ``Mozilla/5.0`` user agent.
- Security gateways (Barracuda, Proofpoint, Mimecast, Cisco, Microsoft's Safe Links, ...) fetch images and
  follow every link of a message before it reaches the inbox; HTTP libraries and crawlers likewise.

Image proxies that fetch on behalf of a reader who opened the message (Gmail's ``GoogleImageProxy``,
Yahoo's ``YahooMailProxy``) are human opens. The rules are patterns over recorded user agents; a
provider's own verdict (SendGrid's ``sg_machine_open``) wins when there is one.
"""

from __future__ import annotations

import functools
import ipaddress
import re
from dataclasses import dataclass
from enum import StrEnum


class AgentClass(StrEnum):
    """The kind of client behind an open or click."""

    APPLE_PRIVACY_PROXY = "apple_privacy_proxy"  #: Apple Mail Privacy Protection's prefetch
    SECURITY_SCANNER = "security_scanner"  #: a mail security gateway checking images and links
    BOT = "bot"  #: a crawler, an HTTP library, a headless browser
    IMAGE_PROXY = "image_proxy"  #: a webmail's image proxy fetching for a reader (Gmail, Yahoo)
    MAIL_CLIENT = "mail_client"  #: a desktop mail client (Outlook, Thunderbird, Apple Mail without MPP)
    MOBILE = "mobile"  #: a phone or tablet browser or mail app
    BROWSER = "browser"  #: a desktop browser (webmail, or a click)
    UNKNOWN = "unknown"


MACHINE_CLASSES: frozenset[AgentClass] = frozenset(
    {AgentClass.APPLE_PRIVACY_PROXY, AgentClass.SECURITY_SCANNER, AgentClass.BOT}
)

#: Apple's own network, where Mail Privacy Protection's proxies fetch from.
APPLE_NETWORKS: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = (ipaddress.ip_network("17.0.0.0/8"),)

#: The whole user agent Apple's privacy proxy presents.
APPLE_PROXY_AGENT = "Mozilla/5.0"

#: (pattern, class), first match wins; searched case-insensitively anywhere in the user agent.
AGENT_RULES: tuple[tuple[re.Pattern[str], AgentClass], ...] = tuple(
    (re.compile(pattern, re.IGNORECASE), cls)
    for pattern, cls in (
        (
            r"barracuda|proofpoint|mimecast|ironport|cisco\s?secure|trend\s?micro|\btmes\b|fortimail|fortinet|"
            r"sophos|symantec|forcepoint|messagelabs|safelinks|bingpreview|urlpreview|skypeuripreview|"
            r"zscaler|checkpoint|\bvade\b",
            AgentClass.SECURITY_SCANNER,
        ),
        (r"googleimageproxy|ggpht\.com|yahoomailproxy", AgentClass.IMAGE_PROXY),
        (
            r"bot\b|crawler|spider|slurp|headlesschrome|phantomjs|python-requests|python-urllib|aiohttp|httpx|"
            r"\bcurl/|\bwget/|go-http-client|java/|okhttp|libwww|apache-httpclient|node-fetch|axios",
            AgentClass.BOT,
        ),
        (
            r"microsoft outlook|ms-office|microsoft office|thunderbird|airmail|postbox|em client|"
            r"applewebkit(?!.*(?:safari|mobile|chrome))",
            AgentClass.MAIL_CLIENT,
        ),
        (r"iphone|ipad|android|mobile", AgentClass.MOBILE),
        (r"chrome|firefox|safari|edg/|opera|trident|msie", AgentClass.BROWSER),
    )
)


@dataclass(frozen=True, slots=True)
class AgentVerdict:
    agent: AgentClass
    machine: bool


def _in_apple_network(ip: str | None) -> bool:
    if not ip:
        return False
    try:
        address = ipaddress.ip_address(ip.strip())
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return any(address in net for net in APPLE_NETWORKS if net.version == address.version)


def classify_agent(user_agent: str | None, ip: str | None = None, *, machine_hint: bool | None = None) -> AgentVerdict:
    """The class of the client behind ``user_agent`` (from ``ip``), and whether it is a machine.

    ``machine_hint`` is a provider's own verdict: it decides ``machine`` whatever the patterns say.
    """
    agent = _agent_class(user_agent, ip)
    machine = agent in MACHINE_CLASSES if machine_hint is None else machine_hint
    if machine_hint and agent not in MACHINE_CLASSES:
        agent = AgentClass.APPLE_PRIVACY_PROXY if _in_apple_network(ip) else AgentClass.BOT
    return AgentVerdict(agent, machine)


@functools.lru_cache(maxsize=4096)  # the same few agents and proxies come back all day
def _agent_class(user_agent: str | None, ip: str | None) -> AgentClass:
    text = (user_agent or "").strip()
    if _in_apple_network(ip) and (text in ("", APPLE_PROXY_AGENT) or "applewebkit" in text.lower()):
        return AgentClass.APPLE_PRIVACY_PROXY
    if text == APPLE_PROXY_AGENT:
        # Nothing but "Mozilla/5.0" is what the privacy proxy sends; no reader's client is that terse.
        return AgentClass.APPLE_PRIVACY_PROXY
    if not text:
        return AgentClass.BOT
    for pattern, cls in AGENT_RULES:
        if pattern.search(text):
            return cls
    return AgentClass.UNKNOWN
