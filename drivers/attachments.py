"""Resolve ``s3://bucket/key`` attachment references into :class:`~drivers.base.Attachment` objects.

Small files are fetched and carried inline (``data``); a file above ``max_inline_bytes``, or one that would push
the message past ``max_total_inline_bytes``, becomes a presigned GET link (``url``) that the email builders
append to the text and HTML parts. One aiobotocore S3 client per fetcher, opened on first use; ``aclose()``
releases it.

Settings: ``HERALD_S3_ENDPOINT_URL`` (emulator only), ``HERALD_S3_REGION`` (else ``AWS_REGION``, else
``us-east-1``), ``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``/``AWS_SESSION_TOKEN`` when given (else the
default chain), ``HERALD_S3_TIMEOUT_S``, and the limits read by :meth:`AttachmentLimits.from_env`.
"""

from __future__ import annotations

import logging
import mimetypes
import posixpath
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self
from urllib.parse import unquote

from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

from drivers.aws_client import AwsEndpoint, error_parts
from drivers.toolkit import SettingsReader
from engine.delivery import Attachment
from engine.errors import ConfigurationError, DispatchError, PermanentError, RetryableError

if TYPE_CHECKING:
    from aiobotocore.session import AioSession

log = logging.getLogger(__name__)

PROVIDER = "s3"
DEFAULT_REGION = "us-east-1"
DEFAULT_CONTENT_TYPE = "application/octet-stream"
#: What S3 stores when the uploader gave no Content-Type; treated as "unknown".
_GENERIC_TYPES = frozenset({"binary/octet-stream", "application/octet-stream", ""})
#: SigV4 presigned URLs live at most seven days.
MAX_PRESIGN_TTL_S = 7 * 24 * 3600

_NOT_FOUND = frozenset({"NoSuchKey", "NoSuchBucket", "NotFound", "404"})
_DENIED = frozenset({"AccessDenied", "Forbidden", "403", "AllAccessDisabled", "AccountProblem"})
_RETRYABLE = frozenset(
    {"SlowDown", "Throttling", "ThrottlingException", "RequestTimeout", "InternalError", "ServiceUnavailable", "503"}
)


@dataclass(frozen=True, slots=True)
class AttachmentLimits:
    """How many attachments a message may carry and how much of them travels inline."""

    max_count: int = 10
    max_inline_bytes: int = 5 * 1024 * 1024
    max_total_inline_bytes: int = 10 * 1024 * 1024
    presign_ttl_s: int = 7 * 24 * 3600

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> AttachmentLimits:
        """Raises: ConfigurationError naming a variable that is not a non-negative integer."""
        defaults = cls()
        settings = SettingsReader(env)

        def read(var: str, default: int) -> int:
            value = settings.integer(var, default)
            if value < 0:
                raise ConfigurationError(f"{var} must not be negative")
            return value

        return cls(
            max_count=read("HERALD_ATTACHMENT_MAX_COUNT", defaults.max_count),
            max_inline_bytes=read("HERALD_ATTACHMENT_INLINE_MAX_BYTES", defaults.max_inline_bytes),
            max_total_inline_bytes=read("HERALD_ATTACHMENT_TOTAL_MAX_BYTES", defaults.max_total_inline_bytes),
            presign_ttl_s=read("HERALD_ATTACHMENT_LINK_TTL_SECONDS", defaults.presign_ttl_s),
        )


@dataclass(frozen=True, slots=True)
class _Ref:
    uri: str
    bucket: str
    key: str
    filename: str | None
    content_type: str | None


def _field(ref: object, name: str) -> Any:
    return ref.get(name) if isinstance(ref, Mapping) else getattr(ref, name, None)


def parse_ref(ref: object) -> _Ref:
    """An ``AttachmentRef``-like object or dict -> bucket, key and overrides.

    Raises: PermanentError(code="invalid_attachment_uri") when ``s3`` is not ``s3://bucket/key``.
    """
    uri = str(_field(ref, "s3") or "")
    bucket, _, key = uri.removeprefix("s3://").partition("/")
    if not uri.startswith("s3://") or not bucket or not key:
        raise PermanentError(
            f"not an s3://bucket/key URI: {uri[:200]!r}", provider=PROVIDER, code="invalid_attachment_uri"
        )
    return _Ref(uri, bucket, unquote(key), _field(ref, "filename") or None, _field(ref, "content_type") or None)


def classify(err: BaseException, uri: str) -> DispatchError:
    """Translate one S3/botocore failure for ``uri``; the message names the object, never credentials."""
    if isinstance(err, ClientError):
        code, answered, _ = error_parts(err)
        status = int(answered or 0) or None
        if code in _NOT_FOUND or status == 404:
            return PermanentError(
                f"attachment {uri} not found", provider=PROVIDER, code="attachment_not_found", status_code=status
            )
        if code in _DENIED or status == 403:
            return PermanentError(
                f"access to attachment {uri} denied",
                provider=PROVIDER,
                code="attachment_access_denied",
                status_code=status,
            )
        if code in _RETRYABLE or status in (429, None) or (status or 0) >= 500:
            return RetryableError(
                f"attachment {uri} unavailable ({code or status})",
                provider=PROVIDER,
                code="attachment_unavailable",
                status_code=status,
            )
        return PermanentError(
            f"attachment {uri} rejected ({code or status})",
            provider=PROVIDER,
            code="attachment_error",
            status_code=status,
        )
    if isinstance(err, NoCredentialsError):
        return RetryableError("no AWS credentials for attachments", provider=PROVIDER, code="attachment_unavailable")
    return RetryableError(
        f"attachment {uri} unavailable ({type(err).__name__})", provider=PROVIDER, code="attachment_unavailable"
    )


def _content_type(ref: _Ref, filename: str, stored: str | None) -> str:
    if ref.content_type:
        return ref.content_type
    if stored and stored.split(";")[0].strip().lower() not in _GENERIC_TYPES:
        return stored
    return mimetypes.guess_type(filename)[0] or stored or DEFAULT_CONTENT_TYPE


class S3AttachmentFetcher:
    """Turns attachment references into inline bytes or presigned links, within :class:`AttachmentLimits`."""

    def __init__(
        self, settings: AwsEndpoint, limits: AttachmentLimits | None = None, *, session: AioSession | None = None
    ) -> None:
        self.settings = settings
        self.limits = limits or AttachmentLimits()
        self._client = settings.client(
            "s3",
            session=session,
            signature_version="s3v4",
            s3={"addressing_style": "path"} if settings.endpoint_url else None,
        )

    @classmethod
    def from_env(cls, env: Mapping[str, str], limits: AttachmentLimits | None = None) -> Self:
        """Raises: ConfigurationError for a malformed limit variable."""
        endpoint = AwsEndpoint.from_env(env, "S3", also=("AWS_REGION",), default_region=DEFAULT_REGION)
        return cls(endpoint, limits or AttachmentLimits.from_env(env))

    async def resolve(self, refs: Sequence[object]) -> tuple[Attachment, ...]:
        """One :class:`Attachment` per reference, in order.

        Raises:
            PermanentError: ``too_many_attachments``, ``invalid_attachment_uri``, ``attachment_not_found``,
                ``attachment_access_denied`` or ``attachment_error``.
            RetryableError: ``attachment_unavailable`` (throttled, 5xx, unreachable).
        """
        if len(refs) > self.limits.max_count:
            raise PermanentError(
                f"{len(refs)} attachments, at most {self.limits.max_count} allowed",
                provider=PROVIDER,
                code="too_many_attachments",
            )
        parsed = [parse_ref(r) for r in refs]
        if not parsed:
            return ()
        client = await self._client.get()
        total = 0
        out: list[Attachment] = []
        for ref in parsed:
            attachment, size = await self._one(client, ref, total)
            total += size
            out.append(attachment)
        return tuple(out)

    async def _one(self, client: Any, ref: _Ref, inline_so_far: int) -> tuple[Attachment, int]:
        """The attachment and the bytes it adds to the inline total. The one boundary for AWS failures."""
        try:
            head = await client.head_object(Bucket=ref.bucket, Key=ref.key)
            size = int(head.get("ContentLength") or 0)
            filename = ref.filename or posixpath.basename(ref.key) or "attachment"
            content_type = _content_type(ref, filename, head.get("ContentType"))
            limits = self.limits
            if size <= limits.max_inline_bytes and inline_so_far + size <= limits.max_total_inline_bytes:
                response = await client.get_object(Bucket=ref.bucket, Key=ref.key)
                async with response["Body"] as body:
                    data: bytes = await body.read()
                return Attachment(filename, content_type, data=data), len(data)
            url: str = await client.generate_presigned_url(
                "get_object",
                Params={"Bucket": ref.bucket, "Key": ref.key},
                ExpiresIn=max(1, min(limits.presign_ttl_s, MAX_PRESIGN_TTL_S)),
            )
            log.debug("attachment %s (%d bytes) sent as a link", ref.uri, size)
            return Attachment(filename, content_type, url=url), 0
        except (ClientError, BotoCoreError, OSError, TimeoutError) as err:
            raise classify(err, ref.uri) from err

    async def aclose(self) -> None:
        """Release the S3 client."""
        await self._client.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()
