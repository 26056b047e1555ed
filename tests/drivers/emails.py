"""The email the email drivers' own tests send (SES, SMTP): one recipient, text and HTML parts."""

from __future__ import annotations

from engine.channels import Channel
from engine.delivery import Address, Content, OutboundMessage

TO = "jane.doe@example.com"
UNSUB = {"List-Unsubscribe": "<https://herald.example/u/abc>", "List-Unsubscribe-Post": "List-Unsubscribe=One-Click"}


def msg(n: int = 1, to: str = TO, **kw: object) -> OutboundMessage:
    return OutboundMessage(
        message_id=f"msg_{n:04d}",
        tenant="acme",
        channel=Channel.EMAIL,
        to=Address(email=to),
        content=Content(subject="Your order shipped", text="Order #1234 is on its way.", html="<p>Order #1234</p>"),
        **kw,  # type: ignore[arg-type]
    )
