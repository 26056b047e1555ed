"""``herald`` run as a user runs it: the venv's console script in a subprocess with its own data directory.

Every process such a run starts is tracked (Ray's, and the embedded PostgreSQL, which ``pg_ctl`` detaches),
so a test can time a stop until the last of them is gone and never leaves one behind.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psutil

HERALD = str(Path(sys.executable).with_name("herald"))
#: Herald's variables that point it at servers; the embedded defaults mean none of them set.
SERVER_VARIABLES = ("DATABASE_URL", "AMQP_URL", "REDIS_URL", "RAY_ADDRESS")


def free_port() -> int:
    """A free port below the kernel's ephemeral range (32768+) and Serve's direct-ingress ranges (30000+),
    so no process's port-0 bind or outgoing connection takes it between this check and ``herald up``."""
    for _ in range(200):
        port = random.randint(20000, 29999)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port in 20000-29999")


def new_data_dir() -> Path:
    """Outside pytest's 0700 temp root, which the embedded server's own user could not enter."""
    return Path(tempfile.mkdtemp(prefix="herald-proc-")) / "herald"


def herald_env(data_dir: Path, **extra: str) -> dict[str, str]:
    """The embedded defaults (no server variables), this data dir, a free port, one sender."""
    env = {k: v for k, v in os.environ.items() if k not in SERVER_VARIABLES and not k.startswith("HERALD_")}
    env.update({"HERALD_DATA_DIR": str(data_dir), "HERALD_HTTP_PORT": str(free_port()), "HERALD_SENDERS": "1"})
    env.update(extra)
    return env


def run_herald(*args: str, env: Mapping[str, str], timeout_s: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([HERALD, *args], env=dict(env), capture_output=True, text=True, timeout=timeout_s)


def _postmaster(data_dir: Path) -> psutil.Process | None:
    try:
        process = psutil.Process(int((data_dir / "pg" / "postmaster.pid").read_text().split()[0]))
        return process if process.name() == "postgres" else None
    except (OSError, ValueError, IndexError, psutil.Error):
        return None


@dataclass
class HeraldUp:
    """One ``herald up``: its output goes to a file in the data directory's parent."""

    env: dict[str, str]
    args: tuple[str, ...] = ()
    proc: subprocess.Popen[bytes] | None = None
    seen: dict[int, psutil.Process] = field(default_factory=dict)

    @property
    def data_dir(self) -> Path:
        return Path(self.env["HERALD_DATA_DIR"])

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.env['HERALD_HTTP_PORT']}"

    @property
    def log_file(self) -> Path:
        return self.data_dir.parent / f"up-{id(self)}.log"

    def output(self) -> str:
        return self.log_file.read_text(errors="replace") if self.log_file.exists() else ""

    def start(self) -> HeraldUp:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        with self.log_file.open("wb") as log:
            self.proc = subprocess.Popen([HERALD, "up", *self.args], env=self.env, stdout=log, stderr=subprocess.STDOUT)
        return self

    def wait_healthy(self, timeout_s: float = 240) -> None:
        """Until this run says it is up and ``/admin/healthz`` answers 200 (a killed run's leftovers may
        still answer on the port for a moment, so the health check alone would not tell)."""
        assert self.proc is not None
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"herald up exited {self.proc.returncode}:\n{self.output()[-4000:]}"
            if "Herald is up at" in self.output():
                try:
                    if httpx.get(f"{self.base_url}/admin/healthz", timeout=2).status_code == 200:
                        self.track()
                        return
                except httpx.HTTPError:
                    pass
            time.sleep(0.5)
        raise AssertionError(f"herald up not healthy in {timeout_s:.0f}s:\n{self.output()[-4000:]}")

    def track(self) -> list[psutil.Process]:
        """Every process of this run so far: its descendants and the embedded server with its backends."""
        assert self.proc is not None
        found: list[psutil.Process] = []
        with contextlib.suppress(psutil.Error):
            found += psutil.Process(self.proc.pid).children(recursive=True)
        postmaster = _postmaster(self.data_dir)
        if postmaster is not None:
            found += [postmaster, *postmaster.children(recursive=True)]
        for process in found:
            self.seen.setdefault(process.pid, process)
        return list(self.seen.values())

    def alive(self) -> list[psutil.Process]:
        return [p for p in self.seen.values() if _running(p)]

    def stop(self, sig: signal.Signals = signal.SIGTERM, timeout_s: float = 60) -> tuple[int, float]:
        """Send ``sig``; returns (exit code, seconds until the process and everything it started are gone)."""
        assert self.proc is not None
        self.track()
        began = time.monotonic()
        self.proc.send_signal(sig)
        code = self.proc.wait(timeout=timeout_s)
        psutil.wait_procs(self.alive(), timeout=max(0.1, timeout_s - (time.monotonic() - began)))
        return code, time.monotonic() - began

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def kill(self) -> None:
        """SIGKILL, as a crash or ``kill -9`` would: nothing of Herald's own stop runs."""
        assert self.proc is not None
        self.track()
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)

    def kill_everything(self) -> None:
        """Test clean-up: whatever this run left (after a failure, or a SIGKILL on purpose)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=30)
        kill_all(self.alive())


def _running(process: psutil.Process) -> bool:
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def kill_all(processes: Iterable[psutil.Process]) -> None:
    processes = list(processes)
    for process in processes:
        with contextlib.suppress(psutil.Error):
            process.kill()
    psutil.wait_procs(processes, timeout=10)


def describe(processes: Iterable[psutil.Process]) -> list[str]:
    out = []
    for process in processes:
        try:
            out.append(f"{process.pid} {process.name()}")
        except psutil.Error:
            out.append(f"{process.pid} (gone)")
    return out


def token(env: Mapping[str, str], tenant: str, *, admin: bool = False) -> str:
    result = run_herald("token", "--tenant", tenant, *(["--admin"] if admin else []), env=env)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()
