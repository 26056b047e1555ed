"""``$HERALD_DATA_DIR/herald.pid``: which process runs a Herald from a data directory, and its children.

One Herald owns a data directory at a time (its embedded database, its local Ray). The file names the
owner and, once it is up, the processes it started (Ray's), each by pid and start time so a reused pid is
never mistaken for one of them. A Herald that finds the file of an owner that no longer runs (it was
killed) stops the processes it left behind, says so, and takes over.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Collection
from dataclasses import asdict, dataclass, field
from pathlib import Path

import psutil

from engine.errors import ConfigurationError

log = logging.getLogger("herald")

#: How long leftover processes get to exit after SIGTERM before they are killed.
LEFTOVER_GRACE_S = 3.0


@dataclass(frozen=True, slots=True)
class Proc:
    pid: int
    started: float  #: psutil's create_time: with the pid, one process for good

    @classmethod
    def of(cls, process: psutil.Process) -> Proc:
        return cls(process.pid, process.create_time())

    def running(self) -> psutil.Process | None:
        try:
            process = psutil.Process(self.pid)
            if process.create_time() == self.started and process.status() != psutil.STATUS_ZOMBIE:
                return process
        except psutil.Error:
            pass
        return None


@dataclass(slots=True)
class Record:
    owner: Proc
    children: list[Proc] = field(default_factory=list)
    #: what listened on the public port (HAProxy): stopped after the children, since its manager (a Ray
    #: actor) starts it again if it dies first
    listeners: list[Proc] = field(default_factory=list)

    @classmethod
    def load(cls, path: Path) -> Record | None:
        try:
            doc = json.loads(path.read_text())
            return cls(
                Proc(**doc["owner"]),
                [Proc(**c) for c in doc.get("children", [])],
                [Proc(**c) for c in doc.get("listeners", [])],
            )
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def save(self, path: Path) -> None:
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(self)))
        tmp.replace(path)


@dataclass
class RunFile:
    path: Path
    me: Proc = field(default_factory=lambda: Proc.of(psutil.Process()))

    @classmethod
    def in_dir(cls, data_dir: Path) -> RunFile:
        return cls(data_dir / "herald.pid")

    def claim(self) -> None:
        """Become the data directory's owner, cleaning up after an owner that was killed.

        Raises:
            ConfigurationError: another Herald runs from this data directory.
        """
        self.path.parent.mkdir(parents=True, exist_ok=True)
        previous = Record.load(self.path)
        if previous is not None and previous.owner != self.me:
            if previous.owner.running() is not None:
                raise ConfigurationError(
                    f"another herald (pid {previous.owner.pid}) is running from HERALD_DATA_DIR={self.path.parent}; "
                    "stop it first, or set another HERALD_DATA_DIR"
                )
            log.warning(
                "the previous herald (pid %d) did not stop cleanly; recovering %s", previous.owner.pid, self.path.parent
            )
            # What they started after the record, too: HAProxy's manager starts a new HAProxy on each reload.
            late = descendants(previous.children + previous.listeners)
            stopped = stop_leftovers(previous.children) + stop_leftovers(previous.listeners + late)
            if stopped:
                log.warning("stopped what it left running: %s", ", ".join(stopped))
        Record(self.me).save(self.path)

    def record_children(self, ports: Collection[int] = ()) -> None:
        """Note the processes started so far (Ray's), for a later Herald to stop if this one is killed;
        and whatever listens on ``ports`` (HAProxy daemonizes, so it is nobody's child)."""
        found = {p.pid: p for p in psutil.Process(self.me.pid).children(recursive=True)}
        listeners = {}
        for pid in _listening_on(ports):
            if pid != self.me.pid:
                with contextlib.suppress(psutil.Error):
                    listeners[pid] = found.pop(pid, None) or psutil.Process(pid)
        Record(self.me, [Proc.of(p) for p in found.values()], [Proc.of(p) for p in listeners.values()]).save(self.path)

    def children(self) -> list[Proc]:
        """What this Herald started, listeners last (see :attr:`Record.listeners`)."""
        record = Record.load(self.path)
        return record.children + record.listeners if record is not None and record.owner == self.me else []

    def release(self) -> None:
        record = Record.load(self.path)
        if record is not None and record.owner == self.me:
            self.path.unlink(missing_ok=True)


def descendants(procs: list[Proc]) -> list[Proc]:
    """What the running ones among ``procs`` started (their children, recursively), beyond ``procs``."""
    known = set(procs)
    found = []
    for proc in procs:
        process = proc.running()
        if process is None:
            continue
        with contextlib.suppress(psutil.Error):
            for child in process.children(recursive=True):
                with contextlib.suppress(psutil.Error):
                    late = Proc.of(child)
                    if late not in known:
                        known.add(late)
                        found.append(late)
    return found


def stop_leftovers(children: list[Proc], *, grace_s: float = LEFTOVER_GRACE_S) -> list[str]:
    """SIGTERM the ones still running, SIGKILL what is left after ``grace_s``; returns what was stopped."""
    alive = [p for p in (c.running() for c in children) if p is not None]
    if not alive:
        return []
    names = []
    for process in alive:
        try:
            names.append(f"{process.name()} (pid {process.pid})")
            process.terminate()
        except psutil.Error:
            pass
    _, still = psutil.wait_procs(alive, timeout=grace_s)
    for process in still:
        with contextlib.suppress(psutil.Error):
            process.kill()
    psutil.wait_procs(still, timeout=grace_s)
    return names


def _listening_on(ports: Collection[int]) -> list[int]:
    if not ports:
        return []
    try:
        connections = psutil.net_connections("tcp")
    except psutil.Error:
        return []
    return [c.pid for c in connections if c.pid and c.status == psutil.CONN_LISTEN and c.laddr.port in ports]
