"""What the AWS-backed drivers (SES, SNS; S3 for attachments) share: one aiobotocore client each, opened
on first use, and the one boundary where botocore's failures become Herald's classes.

botocore's own retries are off (one attempt): retrying is the engine's job, with its backoff and failover.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable, Iterator, Mapping
from contextlib import AsyncExitStack, contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectionClosedError,
    ConnectTimeoutError,
    EndpointConnectionError,
    NoCredentialsError,
    ParamValidationError,
    ReadTimeoutError,
)

from drivers.toolkit import SettingsReader, TransportErrors
from engine.errors import DispatchError, PermanentError, ProviderDownError, RetryableError

if TYPE_CHECKING:  # aiobotocore is imported at the first AWS call: most processes never make one
    from aiobotocore.session import AioSession

#: botocore: no connection (refused, DNS) or a connect timeout sent nothing; a read timeout or a closed
#: connection came after the request went out.
BOTO_ERRORS = TransportErrors(
    unreachable=(EndpointConnectionError, ConnectTimeoutError),
    timed_out=(ReadTimeoutError,),
    broken=(ConnectionClosedError,),
)

#: Environment variable -> aiobotocore ``create_client`` argument.
_CREDENTIAL_VARS = (
    ("aws_access_key_id", "AWS_ACCESS_KEY_ID"),
    ("aws_secret_access_key", "AWS_SECRET_ACCESS_KEY"),
    ("aws_session_token", "AWS_SESSION_TOKEN"),
)


def credentials_from_env(env: Mapping[str, str]) -> dict[str, str]:
    """Explicit AWS credentials when set; empty means botocore's default chain (instance role...)."""
    return {param: env[var] for param, var in _CREDENTIAL_VARS if env.get(var)}


def error_parts(err: ClientError) -> tuple[str, int | None, str]:
    """An AWS error answer as (error code, HTTP status, message)."""
    error = err.response.get("Error", {})
    code = str(error.get("Code") or "")
    status = err.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return code, status, str(error.get("Message") or code)


@contextmanager
def aws_boundary(provider: str, classify: Callable[[ClientError], DispatchError]) -> Iterator[None]:
    """Around one AWS call of a driver: error answers go through the driver's ``classify``, transport
    errors through :data:`BOTO_ERRORS`, missing credentials are provider-wide."""
    with BOTO_ERRORS.boundary(provider):
        try:
            yield
        except ClientError as err:
            raise classify(err) from err
        except NoCredentialsError as err:
            raise ProviderDownError("no AWS credentials", provider=provider, code="credentials") from err
        except ParamValidationError as err:
            raise PermanentError(f"request refused by botocore ({type(err).__name__})", provider=provider) from err
        except BotoCoreError as err:
            if isinstance(err, BOTO_ERRORS.all):
                raise
            raise RetryableError(f"AWS client: {type(err).__name__}", provider=provider, code="aws_client") from err


class RequestParamsLogFilter(logging.Filter):
    """botocore logs every request's params at DEBUG (``Making request for … with params: {…}``):
    addresses, phone numbers, message bodies. This keeps the operation name and drops the params."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str) and "with params" in record.msg and record.args:
            args = record.args if isinstance(record.args, tuple) else (record.args,)
            record.msg, record.args = "Making request for %s (params not logged)", (args[0],)
        return True


def install_params_filter() -> None:
    """Attach :class:`RequestParamsLogFilter` to botocore's endpoint logger, once per process."""
    logger = logging.getLogger("botocore.endpoint")
    if not any(isinstance(f, RequestParamsLogFilter) for f in logger.filters):
        logger.addFilter(RequestParamsLogFilter())


@functools.cache
def shared_session() -> AioSession:
    """One botocore session per process: every AWS driver (a tenant's own too) reuses the service models it
    has loaded, instead of loading them again for each driver built. Clients stay per driver."""
    from aiobotocore.session import get_session

    return get_session()


@dataclass(frozen=True, slots=True)
class AwsEndpoint:
    """Where and as whom an AWS-backed part connects, from ``HERALD_<SERVICE>_REGION``, ``_ENDPOINT_URL``
    (moto) and ``_TIMEOUT_S``, with explicit credentials when set (else botocore's default chain)."""

    region: str
    endpoint_url: str | None = None
    credentials: Mapping[str, str] = field(default_factory=dict, repr=False)
    timeout_s: float = 10.0

    @classmethod
    def from_env(
        cls, env: Mapping[str, str], service: str, *, also: tuple[str, ...] = (), default_region: str | None = None
    ) -> AwsEndpoint:
        """``also``: region variables read after ``HERALD_<SERVICE>_REGION`` (``AWS_REGION``).

        Raises:
            ConfigurationError: no region is set and there is no default, or the timeout is not a number.
        """
        read = SettingsReader(env)
        names = (f"HERALD_{service}_REGION", *also)
        return cls(
            region=read.optional(*names) or default_region or read.required(*names),
            endpoint_url=read.optional(f"HERALD_{service}_ENDPOINT_URL"),
            credentials=credentials_from_env(env),
            timeout_s=read.number(f"HERALD_{service}_TIMEOUT_S", 10.0),
        )

    def client(self, service: str, *, session: AioSession | None = None, **config: Any) -> LazyAwsClient:
        return LazyAwsClient(
            service,
            region=self.region,
            endpoint_url=self.endpoint_url,
            timeout_s=self.timeout_s,
            credentials=self.credentials,
            session=session,
            **config,
        )


class LazyAwsClient:
    def __init__(
        self,
        service: str,
        *,
        region: str,
        endpoint_url: str | None,
        timeout_s: float,
        credentials: Mapping[str, str],
        session: AioSession | None = None,
        **config: Any,
    ) -> None:
        self.service = service
        self._kwargs = {"region_name": region, "endpoint_url": endpoint_url, **credentials}
        self._config_args = {
            "retries": {"total_max_attempts": 1, "mode": "standard"},
            "connect_timeout": timeout_s,
            "read_timeout": timeout_s,
            **config,
        }
        self._session = session
        self._stack = AsyncExitStack()
        self._client: Any = None
        self._lock = asyncio.Lock()
        install_params_filter()

    @property
    def opened(self) -> bool:
        return self._client is not None

    async def get(self) -> Any:
        async with self._lock:
            if self._client is None:
                from aiobotocore.config import AioConfig

                session = self._session or shared_session()
                self._client = await self._stack.enter_async_context(
                    session.create_client(self.service, config=AioConfig(**self._config_args), **self._kwargs)
                )
            return self._client

    async def aclose(self) -> None:
        await self._stack.aclose()
        self._client = None
