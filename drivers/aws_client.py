"""One aiobotocore client per AWS-backed driver (SES, SNS, S3), opened on first use.

botocore's own retries are off (one attempt): retrying is the engine's job, with its backoff and failover.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from contextlib import AsyncExitStack
from typing import Any

from aiobotocore.config import AioConfig
from aiobotocore.session import AioSession, get_session


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
