"""The MIME message shared by SES (raw) and SMTP: text + html alternative, attachments, custom headers."""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from dataclasses import replace
from email.message import EmailMessage
from email.policy import EmailPolicy
from email.utils import formataddr, make_msgid

from engine.delivery import Attachment, Content, OutboundMessage
from engine.errors import BadRecipientError, PermanentError

#: Headers the driver writes itself; a template's custom headers may not override them.
RESERVED_HEADERS = frozenset({"from", "to", "cc", "bcc", "subject", "content-type", "mime-version"})
#: Headers whose value is a URL in angle brackets (RFC 2369): never folded into RFC 2047 encoded words.
URL_HEADERS = frozenset({"list-unsubscribe", "list-help", "list-subscribe", "list-archive"})
#: RFC 5322: no line longer than this, CRLF excluded.
MAX_LINE = 998


class MailPolicy(EmailPolicy):
    """The SMTP policy, except that a URL header is written as it is.

    Python's folder turns a word longer than a line (a one-click unsubscribe URL with its signed token)
    into ``=?utf-8?q?...?=`` encoded words, which RFC 2369 does not allow there: mailbox providers then
    see no unsubscribe link. Such a header is ASCII without whitespace, so it goes on one line.
    """

    def _verbatim(self, name: str, value: str) -> str | None:
        line = f"{name}: {value}"
        one_line = value.isascii() and "\n" not in value and "\r" not in value and len(line) <= MAX_LINE
        return line + self.linesep if name.lower() in URL_HEADERS and one_line else None

    def fold(self, name: str, value: str) -> str:
        return self._verbatim(name, value) or super().fold(name, value)

    def fold_binary(self, name: str, value: str) -> bytes:
        verbatim = self._verbatim(name, value)
        return verbatim.encode("ascii") if verbatim else super().fold_binary(name, value)


MAIL_POLICY = MailPolicy(linesep="\r\n")


def recipient(message: OutboundMessage, provider: str) -> str:
    """The recipient's address, or a BadRecipientError when it is missing or malformed."""
    email = (message.to.email or "").strip()
    local, at, domain = email.rpartition("@")
    if not at or not local or "." not in domain or any(c.isspace() for c in email):
        raise BadRecipientError("invalid email address", provider=provider, code="invalid_address")
    return email


def with_attachment_links(content: Content, attachments: Sequence[Attachment]) -> Content:
    """``content`` with a link list appended to its text and HTML parts for each attachment sent as a ``url``
    (above the inline limit); unchanged when there is none."""
    links = [(a.filename, a.url) for a in attachments if a.data is None and a.url]
    if not links:
        return content
    text = content.text
    if text:
        text += "\n\nAttachments:\n" + "".join(f"- {name}: {url}\n" for name, url in links)
    body = content.html
    if body:
        items = "".join(
            f'<li><a href="{html.escape(url, quote=True)}">{html.escape(name)}</a></li>' for name, url in links
        )
        block = f"<p>Attachments:</p><ul>{items}</ul>"
        index = body.lower().rfind("</body>")
        body = body[:index] + block + body[index:] if index >= 0 else body + block
    return replace(content, text=text, html=body)


def to_header(message: OutboundMessage, email: str) -> str:
    return formataddr((message.to.name, email)) if message.to.name else email


def build_mime(message: OutboundMessage, sender: str, *, provider: str) -> EmailMessage:
    """One RFC 5322 message; a missing body is a PermanentError."""
    content = with_attachment_links(message.content, message.attachments)
    if not (content.text or content.html):
        raise PermanentError("email has neither text nor html", provider=provider, code="empty_body")
    email = recipient(message, provider)
    mime = EmailMessage(policy=MAIL_POLICY)
    mime["From"] = sender
    mime["To"] = to_header(message, email)
    mime["Subject"] = content.subject or ""
    mime["Message-ID"] = make_msgid(domain=sender.rpartition("@")[2].rstrip(">") or None)
    for name, value in message.headers.items():
        if name.lower() in RESERVED_HEADERS:
            continue
        try:
            mime[name] = value
        except ValueError as err:  # a line break or a malformed name: never let it reach the wire
            raise PermanentError(f"invalid header {name[:64]!r}", provider=provider, code="invalid_header") from err
    if content.text:
        mime.set_content(content.text, subtype="plain", cte="quoted-printable")
        if content.html:
            mime.add_alternative(content.html, subtype="html", cte="quoted-printable")
    else:
        mime.set_content(content.html or "", subtype="html", cte="quoted-printable")
    for attachment in message.attachments:
        if attachment.data is None:
            continue  # above the inline limit: sent as a link in the body (with_attachment_links)
        maintype, _, subtype = attachment.content_type.partition("/")
        mime.add_attachment(
            attachment.data,
            maintype=maintype or "application",
            subtype=subtype or "octet-stream",
            filename=attachment.filename,
        )
    return mime


DEFAULT_FROM = "Herald <no-reply@herald.local>"


def default_sender(env: Mapping[str, str], specific_var: str) -> str:
    """The driver's own sender variable, else ``HERALD_EMAIL_FROM``, else the built-in default."""
    return env.get(specific_var) or env.get("HERALD_EMAIL_FROM") or DEFAULT_FROM
