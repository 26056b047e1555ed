"""The data directory's run file: a killed Herald's processes, listeners on the public port last."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil

from serve_app.runfile import Proc, Record, RunFile

SERVE = "import socket,sys,time; s=socket.socket(); s.bind(('127.0.0.1', int(sys.argv[1]))); s.listen(); time.sleep(60)"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_listening(port: int) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise AssertionError(f"nothing listens on {port}")


def test_a_killed_owners_children_and_listener_are_stopped_by_the_next(tmp_path: Path) -> None:
    port = free_port()
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    bystander = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])  # recorded, not ours
    listener = subprocess.Popen([sys.executable, "-c", SERVE, str(port)])
    try:
        wait_listening(port)
        owner = RunFile.in_dir(tmp_path)
        owner.claim()
        owner.record_children(ports=[port])
        record = Record.load(owner.path)
        assert record is not None
        assert [p.pid for p in record.listeners] == [listener.pid]  # its own entry, not among the children
        assert child.pid in {p.pid for p in record.children}  # (beside any other child of this process)
        assert [p.pid for p in owner.children()][-1] == listener.pid  # listeners last
        dead = Proc(owner.me.pid, owner.me.started + 1)  # as if the owner had been killed
        mine = [p for p in record.children if p.pid == child.pid]  # not this test process's other children
        Record(dead, mine, record.listeners).save(owner.path)
        RunFile.in_dir(tmp_path).claim()
        assert child.wait(10) is not None and listener.wait(10) is not None
        assert bystander.poll() is None
        assert not any(c.laddr.port == port for c in psutil.net_connections("tcp") if c.status == psutil.CONN_LISTEN)
    finally:
        for p in (child, bystander, listener):
            p.kill()
            p.wait()


#: A manager that starts its listener (as HAProxy's manager does on each reload), then waits.
MANAGER = (
    "import subprocess,sys,time; subprocess.Popen([sys.executable, '-c', sys.argv[1], sys.argv[2]]); time.sleep(60)"
)


def test_what_a_killed_owners_processes_started_after_the_record_is_stopped_too(tmp_path: Path) -> None:
    port = free_port()
    owner = RunFile.in_dir(tmp_path)
    owner.claim()
    manager = subprocess.Popen([sys.executable, "-c", MANAGER, SERVE, str(port)])
    started: list[psutil.Process] = []
    try:
        recorded = [Proc.of(psutil.Process(manager.pid))]  # recorded before it started its listener
        wait_listening(port)
        started = psutil.Process(manager.pid).children()
        assert len(started) == 1
        dead = Proc(owner.me.pid, owner.me.started + 1)  # as if the owner had been killed
        Record(dead, recorded).save(owner.path)
        RunFile.in_dir(tmp_path).claim()
        assert manager.wait(10) is not None
        _, alive = psutil.wait_procs(started, timeout=10)
        assert not alive
        assert not any(c.laddr.port == port for c in psutil.net_connections("tcp") if c.status == psutil.CONN_LISTEN)
    finally:
        for p in started:
            with contextlib.suppress(psutil.Error):
                p.kill()
        manager.kill()
        manager.wait()
