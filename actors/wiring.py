"""Where concrete drivers meet the engine: the composition root's one place for it.

The engine receives a :data:`~engine.delivery.DriverFactory` and never imports drivers/. This module binds
the drivers' registry to Herald's own services (the in-app driver's inbox storage), so sender actors, the
ingress and ``herald up`` build drivers the same way.
"""

from __future__ import annotations

import functools

from drivers import REGISTRY, create_driver
from drivers.base import DriverServices
from engine.channels import Channel
from engine.delivery import DriverFactory
from engine.storage.inbox import PostgresInboxStore


class DriverWiring:
    """The registry with the services bound; the owner closes it (the services it opened) at the end."""

    def __init__(self, database_url: str) -> None:
        self.inbox = PostgresInboxStore(database_url)  #: its pool opens on the first in-app send
        self.factory: DriverFactory = functools.partial(create_driver, services=DriverServices(inbox=self.inbox))

    @property
    def known(self) -> list[tuple[Channel, str]]:
        """Every registered (channel, provider)."""
        return sorted(REGISTRY)

    async def aclose(self) -> None:
        await self.inbox.aclose()
