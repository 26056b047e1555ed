"""One aiobotocore client per AWS-backed driver (SES, SNS, S3), opened on first use.

botocore's own retries are off (one attempt): retrying is the engine's job, with its backoff and failover.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from contextlib import AsyncExitStack
from typing import Any

from aiobotocore.config import AioConfig
from aiobotocore.session import AioSession, get_session

#: Environment variable -> aiobotocore ``create_client`` argument.
_CREDENTIAL_VARS = (
    ("aws_access_key_id", "AWS_ACCESS_KEY_ID"),
    ("aws_secret_access_key", "AWS_SECRET_ACCESS_KEY"),
    ("aws_session_token", "AWS_SESSION_TOKEN"),
)


def credentials_from_env(env: Mapping[str, str]) -> dict[str, str]:
    """Explicit AWS credentials when set; empty means botocore's default chain (instance role...)."""
    return {param: env[var] for param, var in _CREDENTIAL_VARS if env.get(var)}


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
        self._config = AioConfig(
            retries={"total_max_attempts": 1, "mode": "standard"},
            connect_timeout=timeout_s,
            read_timeout=timeout_s,
            **config,
        )
        self._session = session or get_session()  # a shared session reuses its loaded service models
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
                self._client = await self._stack.enter_async_context(
                    self._session.create_client(self.service, config=self._config, **self._kwargs)
                )
            return self._client

    async def aclose(self) -> None:
        await self._stack.aclose()
        self._client = None
