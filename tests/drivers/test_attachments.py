"""S3AttachmentFetcher against moto S3 over loopback, and url-attachments rendered as links by the email builders."""

from __future__ import annotations

import email
import email.policy
import os
from collections.abc import AsyncIterator
from email.message import EmailMessage

import httpx
import pytest

from drivers.attachments import AttachmentLimits, S3AttachmentFetcher
from drivers.email._mime import build_mime
from drivers.email.sendgrid import payload
from drivers.fakes import AllFakes
from drivers.fakes.aws import AwsHandle
from engine.channels import Channel
from engine.delivery import Address, Attachment, Content, OutboundMessage
from engine.errors import ConfigurationError, PermanentError, RetryableError
from engine.models import AttachmentRef

BUCKET = "herald-attachments"
SMALL = b"%PDF-1.4 small invoice\n" * 10  # 230 bytes
LARGE = os.urandom(4000)


@pytest.fixture(scope="module")
def stored(fakes: AllFakes) -> AwsHandle:
    """The session's moto with this module's objects in S3."""
    handle: AwsHandle = fakes.aws
    s3 = handle.client("s3")
    s3.create_bucket(Bucket=BUCKET)
    s3.put_object(Bucket=BUCKET, Key="invoices/2024/invoice.pdf", Body=SMALL, ContentType="application/pdf")
    s3.put_object(Bucket=BUCKET, Key="exports/report.csv", Body=b"a,b\n1,2\n")  # no ContentType given
    s3.put_object(Bucket=BUCKET, Key="big/archive.bin", Body=LARGE, ContentType="application/zip")
    for n in range(3):
        s3.put_object(Bucket=BUCKET, Key=f"many/part{n}.txt", Body=b"x" * 600, ContentType="text/plain")
    return handle


@pytest.fixture
def aws(stored: AwsHandle) -> AwsHandle:
    stored.reset()
    return stored


def env(aws: AwsHandle, url: str | None = None, **extra: str) -> dict[str, str]:
    return aws.env() | {"HERALD_S3_ENDPOINT_URL": url or aws.moto_url} | extra


@pytest.fixture
async def fetcher(aws: AwsHandle) -> AsyncIterator[S3AttachmentFetcher]:
    async with S3AttachmentFetcher.from_env(env(aws), AttachmentLimits(max_inline_bytes=1000)) as f:
        yield f


def ref(key: str, **kw: str) -> dict[str, str]:
    return {"s3": f"s3://{BUCKET}/{key}"} | kw


async def test_small_file_is_inline(fetcher: S3AttachmentFetcher) -> None:
    (att,) = await fetcher.resolve([AttachmentRef(s3=f"s3://{BUCKET}/invoices/2024/invoice.pdf")])
    assert att == Attachment("invoice.pdf", "application/pdf", data=SMALL, url=None)


async def test_large_file_becomes_presigned_link(fetcher: S3AttachmentFetcher) -> None:
    (att,) = await fetcher.resolve([ref("big/archive.bin")])
    assert att.data is None and att.url and att.filename == "archive.bin" and att.content_type == "application/zip"
    assert "X-Amz-Signature=" in att.url and "testing" not in att.url.split("?")[0]
    async with httpx.AsyncClient() as http:
        response = await http.get(att.url)
    assert response.status_code == 200 and response.content == LARGE


async def test_missing_key_is_permanent_and_names_the_uri(fetcher: S3AttachmentFetcher) -> None:
    with pytest.raises(PermanentError) as info:
        await fetcher.resolve([ref("invoices/2024/invoice.pdf"), ref("nope/missing.pdf")])
    assert info.value.code == "attachment_not_found"
    assert f"s3://{BUCKET}/nope/missing.pdf" in str(info.value)
    assert info.value.__cause__ is not None
    assert "testing" not in str(info.value)  # no credentials in the message


async def test_missing_bucket_is_not_found(fetcher: S3AttachmentFetcher) -> None:
    with pytest.raises(PermanentError) as info:
        await fetcher.resolve([{"s3": "s3://no-such-bucket-here/a.pdf"}])
    assert info.value.code == "attachment_not_found"


async def test_too_many_is_permanent_before_any_request(aws: AwsHandle) -> None:
    async with S3AttachmentFetcher.from_env(env(aws), AttachmentLimits(max_count=2)) as f:
        with pytest.raises(PermanentError) as info:
            await f.resolve([ref("nope/1"), ref("nope/2"), ref("nope/3")])
        assert info.value.code == "too_many_attachments"
        assert not f._client.opened  # rejected without touching S3


async def test_total_limit_pushes_later_files_to_links(aws: AwsHandle) -> None:
    limits = AttachmentLimits(max_inline_bytes=1000, max_total_inline_bytes=1300)
    async with S3AttachmentFetcher.from_env(env(aws), limits) as f:
        atts = await f.resolve([ref(f"many/part{n}.txt") for n in range(3)])
    assert [a.data is not None for a in atts] == [True, True, False]
    assert atts[0].data == b"x" * 600 and atts[2].url and atts[2].filename == "part2.txt"


async def test_filename_and_content_type_defaults_and_overrides(fetcher: S3AttachmentFetcher) -> None:
    guessed, overridden = await fetcher.resolve(
        [ref("exports/report.csv"), ref("exports/report.csv", filename="May.csv", content_type="text/x-custom")]
    )
    assert (guessed.filename, guessed.content_type) == ("report.csv", "text/csv")
    assert (overridden.filename, overridden.content_type) == ("May.csv", "text/x-custom")
    assert guessed.data == overridden.data == b"a,b\n1,2\n"


async def test_invalid_uri_is_permanent(fetcher: S3AttachmentFetcher) -> None:
    with pytest.raises(PermanentError) as info:
        await fetcher.resolve([{"s3": "https://example.com/x.pdf"}])
    assert info.value.code == "invalid_attachment_uri"


async def test_throttling_and_5xx_are_retryable(aws: AwsHandle) -> None:
    aws.reset()
    async with S3AttachmentFetcher.from_env(env(aws, aws.url)) as f:
        aws.fail("SlowDown", 503, path=f"/{BUCKET}/")
        with pytest.raises(RetryableError) as info:
            await f.resolve([ref("invoices/2024/invoice.pdf")])
        assert info.value.code == "attachment_unavailable" and info.value.__cause__ is not None
        # the fault is used up: the same fetcher (same client) works again
        (att,) = await f.resolve([ref("invoices/2024/invoice.pdf")])
        assert att.data == SMALL
    aws.reset()


async def test_access_denied_is_permanent(aws: AwsHandle) -> None:
    aws.reset()
    async with S3AttachmentFetcher.from_env(env(aws, aws.url)) as f:
        aws.fail("AccessDenied", 403, path=f"/{BUCKET}/")
        with pytest.raises(PermanentError) as info:
            await f.resolve([ref("invoices/2024/invoice.pdf")])
    assert info.value.code == "attachment_access_denied"
    aws.reset()


async def test_unreachable_endpoint_is_retryable(aws: AwsHandle) -> None:
    limits = AttachmentLimits()
    async with S3AttachmentFetcher.from_env(env(aws, "http://127.0.0.1:9", HERALD_S3_TIMEOUT_S="1"), limits) as f:
        with pytest.raises(RetryableError) as info:
            await f.resolve([ref("invoices/2024/invoice.pdf")])
    assert info.value.code == "attachment_unavailable"


def test_limits_from_env() -> None:
    limits = AttachmentLimits.from_env(
        {
            "HERALD_ATTACHMENT_MAX_COUNT": "3",
            "HERALD_ATTACHMENT_INLINE_MAX_BYTES": "100",
            "HERALD_ATTACHMENT_TOTAL_MAX_BYTES": "200",
            "HERALD_ATTACHMENT_LINK_TTL_SECONDS": "60",
        }
    )
    assert limits == AttachmentLimits(3, 100, 200, 60)
    assert AttachmentLimits.from_env({}) == AttachmentLimits()
    with pytest.raises(ConfigurationError, match="HERALD_ATTACHMENT_MAX_COUNT"):
        AttachmentLimits.from_env({"HERALD_ATTACHMENT_MAX_COUNT": "ten"})


LINK = "https://s3.example/big/archive.bin?X-Amz-Signature=abc&x=1"


def email_msg(*attachments: Attachment) -> OutboundMessage:
    return OutboundMessage(
        message_id="msg_0001",
        tenant="acme",
        channel=Channel.EMAIL,
        to=Address(email="jane.doe@example.com"),
        content=Content(subject="Your export", text="Your export is ready.", html="<p>Your export is ready.</p>"),
        attachments=attachments,
    )


def test_url_attachment_is_a_link_in_the_mime_body_not_a_file_part() -> None:
    message = email_msg(
        Attachment("archive.bin", "application/zip", url=LINK),
        Attachment("invoice.pdf", "application/pdf", data=SMALL),
    )
    raw = build_mime(message, "Herald <no-reply@herald.local>", provider="ses").as_bytes()
    parsed = email.message_from_bytes(raw, policy=email.policy.default)
    assert isinstance(parsed, EmailMessage)
    files = [p.get_filename() for p in parsed.iter_attachments()]
    assert files == ["invoice.pdf"]
    text = parsed.get_body(("plain",))
    html = parsed.get_body(("html",))
    assert text is not None and html is not None
    assert f"archive.bin: {LINK}" in text.get_content()
    assert 'href="https://s3.example/big/archive.bin?X-Amz-Signature=abc&amp;x=1"' in html.get_content()


def test_url_attachment_is_a_link_in_sendgrid_payload() -> None:
    doc = payload(email_msg(Attachment("archive.bin", "application/zip", url=LINK)), "no-reply@herald.local")
    assert "attachments" not in doc
    text, html = (block["value"] for block in doc["content"])
    assert LINK in text and "archive.bin</a>" in html
