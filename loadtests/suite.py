"""``herald bench``: each throughput figure beside its baselines, measured in the same run.

Figures are a registry (:data:`FIGURES`): a name (``--only``), a title and a function of the run's
:class:`Context` returning :class:`Row` s. A figure whose module is not installed prints "not available"
and a reason instead of a number; nothing is ever made up.

- ``p1``: ``POST /api/notifications`` on the public port with wrk (one thread, each ``--connections``),
  Herald (relay and senders draining to the ``sink`` provider) beside the bare FastAPI + asyncpg app
  (:mod:`loadtests.bare_app`) and the no-op Serve app in the same serving mode (:mod:`loadtests.noop_serve`);
- ``p2`` / ``p3``: the batch API and end to end (:mod:`loadtests.batch_bench`, :mod:`loadtests.e2e_bench`);
- ``p6``: ``herald up`` on the embedded defaults: seconds until healthy, and the idle PSS of every one of
  its processes;
- ``locust``: a headless locust smoke of :mod:`loadtests.locustfile` against the running Herald.

Every process it starts is stopped by pid (with everything it started) before it returns.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psutil

from loadtests.cpu import CpuMeter, describe, per_unit_ms, process_name
from serve_app.ingress import free_port

HERE = Path(__file__).resolve().parent
HERALD = str(Path(sys.executable).with_name("herald"))
SERVER_VARIABLES = ("DATABASE_URL", "AMQP_URL", "REDIS_URL", "RAY_ADDRESS")
P1_GOAL = 0.7
P1_P99_GOAL_MS = 25.0
P6_START_GOAL_S = 20.0
P6_PSS_GOAL_MIB = 1536.0


@dataclass(frozen=True, slots=True)
class Row:
    """One printed line: a figure, its value, and the baselines it is compared with (ratio value/baseline)."""

    figure: str
    value: float | None
    unit: str
    baselines: tuple[tuple[str, float], ...] = ()
    note: str = ""


@dataclass
class Context:
    duration_s: float
    connections: tuple[int, ...]
    n: int
    batch_size: int
    environ: Mapping[str, str]
    work_dir: Path
    admin_dsn: str = ""  #: a server to create the run's databases on
    dsn: str = ""  #: the run's database (Herald's schema)
    herald: HeraldProcess | None = None
    token: str = ""
    cleanups: list[Callable[[], None]] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Figure:
    title: str
    run: Callable[[Context], list[Row]]
    needs_herald: bool = False


# -- processes ---------------------------------------------------------------------------------------


@dataclass
class Spawned:
    """A subprocess and everything it starts, stopped by pid."""

    name: str
    proc: subprocess.Popen[bytes]
    log: Path
    seen: dict[int, psutil.Process] = field(default_factory=dict)
    extra: Callable[[], list[psutil.Process]] = lambda: []

    @classmethod
    def start(cls, name: str, argv: Sequence[str], env: Mapping[str, str], work_dir: Path) -> Spawned:
        log = work_dir / f"{name}.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(list(argv), env=dict(env), stdout=out, stderr=subprocess.STDOUT, cwd=HERE.parent)
        return cls(name, proc, log)

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def track(self) -> list[psutil.Process]:
        with contextlib.suppress(psutil.Error):
            for p in [psutil.Process(self.proc.pid), *psutil.Process(self.proc.pid).children(recursive=True)]:
                self.seen.setdefault(p.pid, p)
        for p in self.extra():
            self.seen.setdefault(p.pid, p)
        return [p for p in self.seen.values() if _alive(p)]

    def wait_http(self, url: str, timeout_s: float, *, marker: str = "") -> float:
        """Seconds until ``url`` answers 200 (and the output shows ``marker``). Raises: RuntimeError."""
        began = time.monotonic()
        while time.monotonic() - began < timeout_s:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited {self.proc.returncode}:\n{self.output()[-3000:]}")
            if not marker or marker in self.output():
                with contextlib.suppress(httpx.HTTPError):
                    if httpx.get(url, timeout=2).status_code == 200:
                        self.track()
                        return time.monotonic() - began
            time.sleep(0.25)
        raise RuntimeError(f"{self.name} did not answer {url} in {timeout_s:.0f}s:\n{self.output()[-3000:]}")

    def stop(self, timeout_s: float = 40.0) -> None:
        self.track()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=timeout_s)
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        _, left = psutil.wait_procs([p for p in self.seen.values() if _alive(p)], timeout=5)
        for p in left:
            with contextlib.suppress(psutil.Error):
                p.kill()
        psutil.wait_procs(left, timeout=5)


def _alive(p: psutil.Process) -> bool:
    try:
        return p.is_running() and p.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _postmaster(data_dir: Path) -> list[psutil.Process]:
    try:
        master = psutil.Process(int((data_dir / "pg" / "postmaster.pid").read_text().split()[0]))
        return [master, *master.children(recursive=True)] if master.name() == "postgres" else []
    except (OSError, ValueError, IndexError, psutil.Error):
        return []


@dataclass
class HeraldProcess:
    spawned: Spawned
    env: dict[str, str]
    base_url: str
    started_s: float


def herald_env(ctx: Context, data_dir: Path, *, embedded: bool) -> dict[str, str]:
    base = {k: v for k, v in ctx.environ.items() if not k.startswith("HERALD_")}
    if embedded:
        base = {k: v for k, v in base.items() if k not in SERVER_VARIABLES}
    env = {
        **base,
        "HERALD_DATA_DIR": str(data_dir),
        "HERALD_HTTP_PORT": str(free_port()),
        "HERALD_EMAIL_PROVIDERS": "sink",
        "HERALD_SMS_PROVIDERS": "sink",
        "HERALD_LOG_LEVEL": "WARNING",
        "HERALD_QUEUE_PREFIX": f"bench-{uuid.uuid4().hex[:8]}.",
    }
    for name, value in ctx.environ.items():  # a HERALD_ setting given to the bench reaches Herald
        if name.startswith("HERALD_") and name not in ("HERALD_DATA_DIR", "HERALD_HTTP_PORT"):
            env.setdefault(name, value)
    if not embedded and ctx.dsn:
        env["DATABASE_URL"] = ctx.dsn
    return env


def start_herald(ctx: Context, name: str, *, embedded: bool) -> HeraldProcess:
    data_dir = ctx.work_dir / name
    data_dir.mkdir(parents=True, exist_ok=True)
    env = herald_env(ctx, data_dir, embedded=embedded)
    spawned = Spawned.start(name, [HERALD, "up"], env, ctx.work_dir)
    spawned.extra = lambda: _postmaster(data_dir)
    base_url = f"http://127.0.0.1:{env['HERALD_HTTP_PORT']}"
    try:
        started = spawned.wait_http(f"{base_url}/admin/healthz", 300, marker="Herald is up at")
    except BaseException:
        spawned.stop()
        raise
    return HeraldProcess(spawned, env, base_url, started)


def herald_token(herald: HeraldProcess, tenant: str) -> str:
    out = subprocess.run([HERALD, "token", "--tenant", tenant], env=herald.env, capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"herald token: {out.stderr}")
    return out.stdout.strip()


# -- load --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Load:
    rps: float
    p50_ms: float
    p99_ms: float
    requests: int
    errors: int


def wrk(url: str, connections: int, duration_s: float, token: str = "") -> Load:
    """wrk with one thread POSTing :data:`loadtests/post_notification.lua`'s body, a fresh key per request."""
    exe = shutil.which("wrk")
    if exe is None:
        raise RuntimeError("wrk is not installed (apt-get install -y wrk)")
    env = {**os.environ, "HERALD_TOKEN": token}
    argv = [exe, "-t1", f"-c{connections}", f"-d{max(1, round(duration_s))}s", "--latency", "-s",
            str(HERE / "post_notification.lua"), url]  # fmt: skip
    out = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=duration_s + 60)
    line = next((s for s in out.stdout.splitlines() if s.startswith("P1JSON ")), None)
    if line is None:
        raise RuntimeError(f"wrk printed no result: {out.stdout[-2000:]} {out.stderr[-2000:]}")
    doc = json.loads(line.removeprefix("P1JSON "))
    return Load(
        rps=doc["requests"] / (doc["duration_us"] / 1e6),
        p50_ms=doc["p50_us"] / 1000,
        p99_ms=doc["p99_us"] / 1000,
        requests=doc["requests"],
        errors=doc["errors"],
    )


def _load_all(
    url: str, ctx: Context, token: str = "", meter: CpuMeter | None = None
) -> tuple[dict[int, Load], dict[int, dict[str, float]]]:
    """wrk at each connection count after a warm-up; with ``meter``, the CPU per request of each run."""
    wrk(url, ctx.connections[0], min(2.0, ctx.duration_s), token)  # warm-up: connections, caches, JIT-less paths
    loads, cpu = {}, {}
    for c in ctx.connections:
        if meter is not None:
            meter.start()
        loads[c] = wrk(url, c, ctx.duration_s, token)
        if meter is not None:
            cpu[c] = per_unit_ms(meter.stop(), loads[c].requests)
    return loads, cpu


# -- figures -----------------------------------------------------------------------------------------


def p1(ctx: Context) -> list[Row]:
    python = sys.executable
    port = free_port()
    bare = Spawned.start("bare-app", [python, "-m", "loadtests.bare_app", "--port", str(port),
                                      "--database-url", ctx.dsn], ctx.environ, ctx.work_dir)  # fmt: skip
    try:
        bare.wait_http(f"http://127.0.0.1:{port}/docs", 60)
        bare_load, _ = _load_all(f"http://127.0.0.1:{port}", ctx)
    finally:
        bare.stop()
    port = free_port()
    noop = Spawned.start("noop-serve", [python, "-m", "loadtests.noop_serve", "--port", str(port)],
                         {k: v for k, v in ctx.environ.items() if k != "RAY_ADDRESS"}, ctx.work_dir)  # fmt: skip
    try:
        noop.wait_http(f"http://127.0.0.1:{port}/admin/healthz", 240, marker="noop serve app is up")
        noop_load, _ = _load_all(f"http://127.0.0.1:{port}", ctx)
    finally:
        noop.stop()
    assert ctx.herald is not None
    meter = CpuMeter(_herald_parts(ctx.herald.spawned.track()))
    herald_load, herald_cpu = _load_all(ctx.herald.base_url, ctx, ctx.token, meter)
    rows = []
    for c in ctx.connections:
        h, b, n = herald_load[c], bare_load[c], noop_load[c]
        goal = f"goal >= {P1_GOAL}x bare" + (f", p99 <= {P1_P99_GOAL_MS:.0f} ms" if c == 4 else "")
        rows.append(
            Row(
                f"P1 accept, {c} connections",
                h.rps,
                "req/s",
                (("bare FastAPI+asyncpg", b.rps), ("no-op Serve app", n.rps)),
                f"p50 {h.p50_ms:.1f} ms, p99 {h.p99_ms:.1f} ms (bare p99 {b.p99_ms:.1f}, no-op p99 {n.p99_ms:.1f}); "
                f"errors {h.errors}; {goal}; {describe(herald_cpu[c], 'request')}",
            )
        )
    return rows


#: Herald's processes that P1's CPU split names (the others are summed as one part).
_HERALD_PARTS = {
    "ray::ServeReplica:herald:HeraldApi": "api replica",
    "ray::SenderActor": "senders",
    "ray::RelayActor": "relay",
    "haproxy": "haproxy",
}


def _herald_parts(processes: list[psutil.Process]) -> dict[int, str]:
    return {p.pid: _HERALD_PARTS.get(process_name(p), "other herald processes") for p in processes}


def p6(ctx: Context) -> list[Row]:
    """``herald up`` on the embedded defaults in a fresh data directory, then again in the same one."""
    first = start_herald(ctx, "herald-p6", embedded=True)
    try:
        time.sleep(5)  # idle: actors settled, prestarted workers up
        processes = first.spawned.track()
        busy_before = _cpu_s(processes)
        time.sleep(5)
        idle_cpu = (_cpu_s(processes) - busy_before) / 5
        per_process = _pss(processes)
    finally:
        first.spawned.stop()
    again = start_herald(ctx, "herald-p6", embedded=True)
    again.spawned.stop()
    total = sum(mib for _, mib in per_process)
    start_goal = f"goal <= {P6_START_GOAL_S:.0f} s"
    rows = [
        Row("P6 herald up, fresh data dir (initdb included)", first.started_s, "s", note=start_goal),
        Row("P6 herald up, existing data dir", again.started_s, "s", note=start_goal),
        Row("P6 idle memory, all processes (PSS)", total, "MiB", note=f"goal <= {P6_PSS_GOAL_MIB:.0f} MiB"),
        Row("P6 idle CPU, all processes", idle_cpu * 100, "% of one core", note=f"{len(per_process)} processes"),
    ]
    rows += [Row(f"    {name}", mib, "MiB PSS") for name, mib in sorted(per_process, key=lambda x: -x[1])]
    return rows


def _cpu_s(processes: list[psutil.Process]) -> float:
    total = 0.0
    for p in processes:
        with contextlib.suppress(psutil.Error):
            times = p.cpu_times()
            total += times.user + times.system
    return total


def _pss(processes: list[psutil.Process]) -> list[tuple[str, float]]:
    found = []
    for p in processes:
        try:
            name = p.name()
            if name.startswith("python"):  # Ray's helper scripts and the herald command: the script's name
                script = next((a for a in p.cmdline()[1:] if a.endswith(".py") or a.endswith("herald")), "")
                name = f"python {Path(script).name}" if script else name
            found.append((f"{p.pid} {name[:60]}", p.memory_full_info().pss / 2**20))
        except psutil.Error:
            continue
    return found


def locust_smoke(ctx: Context) -> list[Row]:
    exe = shutil.which("locust") or str(Path(sys.executable).with_name("locust"))
    if not Path(exe).exists():
        return [Row("locust smoke (10 s headless)", None, "", note="not available: pip install -e '.[load]'")]
    assert ctx.herald is not None
    prefix = ctx.work_dir / "locust"
    env = {**ctx.environ, "HERALD_TOKEN": ctx.token}
    argv = [exe, "-f", str(HERE / "locustfile.py"), "--headless", "-u", "6", "-r", "6", "-t", "10s",
            "--host", ctx.herald.base_url, "--csv", str(prefix), "--only-summary"]  # fmt: skip
    subprocess.run(argv, env=env, capture_output=True, text=True, timeout=90)
    rows = []
    stats = Path(f"{prefix}_stats.csv")
    if not stats.exists():
        return [Row("locust smoke (10 s headless)", None, "", note="locust wrote no statistics")]
    import csv

    for record in csv.DictReader(stats.open()):
        rows.append(
            Row(
                f"locust {record['Type']} {record['Name']}",
                float(record["Requests/s"]),
                "req/s",
                note=f"{record['Request Count']} requests, {record['Failure Count']} failed, "
                f"p50 {record['50%']} ms, p99 {record['99%']} ms",
            )
        )
    return rows


P2_GOAL_PER_S = 25_000.0
P2_RATIO_GOAL = 0.25
P3_GOAL_PER_S = 10_000.0
P3_RATIO_GOAL = 10.0


def _missing(*modules: str) -> str | None:
    """The first module of ``modules`` that cannot be imported, with the reason."""
    for module in modules:
        try:
            importlib.import_module(module)
        except ImportError as err:
            return f"{module} ({err})"
    return None


def p2(ctx: Context) -> list[Row]:
    """Batch accepts/s beside a raw asyncpg COPY of the same rows, on a database of their own."""
    title = "P2 batch accept"
    if missing := _missing("loadtests.batch_bench"):
        return [Row(title, None, "", note=f"not available: {missing}")]
    from loadtests.batch_bench import _with_database
    from loadtests.batch_bench import p2 as batch_p2

    figures = asyncio.run(_with_database(ctx.admin_dsn, lambda url: batch_p2(url, ctx.n, ctx.batch_size)))
    return [
        Row(
            f"{title}, batches of {ctx.batch_size:,}",
            figures["batch_accept_per_s"],
            "items/s",
            baselines=(("raw asyncpg COPY of the same rows", figures["raw_copy_per_s"]),),
            note=f"best of 3 rounds; medians {figures['batch_accept_median_per_s']:,.0f} vs "
            f"{figures['raw_copy_median_per_s']:,.0f}; goal >= {P2_GOAL_PER_S:,.0f}/s and >= {P2_RATIO_GOAL}x",
        )
    ]


def p3(ctx: Context) -> list[Row]:
    """Batches -> relay -> RabbitMQ -> senders -> ``sink``, every status and event recorded, beside Celery
    doing the same per message; on a database and queues of their own."""
    title = "P3 end to end"
    amqp_url = ctx.environ.get("AMQP_URL")
    if not amqp_url:
        return [Row(title, None, "", note="not available: P3 runs on RabbitMQ (set AMQP_URL)")]
    if missing := _missing("loadtests.e2e_bench", "celery"):
        return [Row(title, None, "", note=f"not available: {missing}; pip install -e '.[bench]'")]
    from loadtests.batch_bench import _with_database
    from loadtests.e2e_bench import p3 as e2e_p3

    figures = asyncio.run(
        _with_database(ctx.admin_dsn, lambda url: e2e_p3(url, amqp_url, ctx.n, min(ctx.batch_size, 5000)))
    )
    herald_rows = sum(figures["herald_rows_per_message"].values())
    celery_rows = sum(figures["celery_rows_per_message"].values())
    return [
        Row(
            title,
            figures["herald_msgs_per_s"],
            "msgs/s",
            baselines=(("Celery pipeline", figures["celery_msgs_per_s"]),),
            note=f"{ctx.n:,} messages; rows written per message {herald_rows:.1f} (Celery {celery_rows:.1f}); "
            f"goal >= {P3_GOAL_PER_S:,.0f} msgs/s and >= {P3_RATIO_GOAL:.0f}x; "
            f"{describe(figures['herald_cpu_ms_per_message'])}",
        )
    ]


FIGURES: dict[str, Figure] = {
    "p1": Figure("P1 single accept on the public port", p1, needs_herald=True),
    "p2": Figure("P2 batch accept", p2),
    "p3": Figure("P3 end to end", p3),
    "p6": Figure("P6 start-up and idle footprint (embedded defaults)", p6),
    "locust": Figure("locust smoke against the running Herald", locust_smoke, needs_herald=True),
}


# -- the run -----------------------------------------------------------------------------------------


@contextlib.contextmanager
def bench_database(ctx: Context) -> Iterator[None]:
    """A database of its own with Herald's schema: on DATABASE_URL's server, else an embedded server."""
    from loadtests.bench import drop, prepare

    embedded_dir = None
    admin = ctx.environ.get("DATABASE_URL")
    if not admin:
        from engine.storage.embedded import embedded_database_url

        embedded_dir = ctx.work_dir / "bench-pg"
        admin = embedded_database_url(embedded_dir)
    ctx.admin_dsn = admin
    ctx.dsn = asyncio.run(prepare(admin))
    try:
        yield
    finally:
        asyncio.run(drop(admin, ctx.dsn))
        if embedded_dir is not None:
            from engine.storage.embedded import release_embedded

            release_embedded(embedded_dir)


def run(names: Sequence[str], ctx: Context, out: Callable[[str], None] = print) -> list[Row]:
    unknown = [n for n in names if n not in FIGURES]
    if unknown:
        raise ValueError(f"unknown figure(s) {unknown}; known: {', '.join(FIGURES)}")
    out(_machine())
    rows: list[Row] = []
    needs_database = any(n != "p6" for n in names)
    with bench_database(ctx) if needs_database else contextlib.nullcontext():
        herald_needed = any(FIGURES[n].needs_herald for n in names)
        try:
            if herald_needed:
                ctx.herald = start_herald(ctx, "herald-p1", embedded=False)
                ctx.token = herald_token(ctx.herald, "bench_p1")
                out(f"herald up (DATABASE_URL: the run's database; broker: "
                    f"{'AMQP_URL' if ctx.environ.get('AMQP_URL') else 'postgres queue'}) in "
                    f"{ctx.herald.started_s:.1f}s")  # fmt: skip
            for name in [n for n in names if FIGURES[n].needs_herald]:
                rows += _figure(name, ctx, out)
        finally:
            if ctx.herald is not None:
                ctx.herald.spawned.stop()
                ctx.herald = None
        # The in-process figures run after the running Herald is stopped (its relay and senders would take
        # their messages), and P6, which starts Heralds of its own, last: each is measured alone.
        for name in [n for n in names if not FIGURES[n].needs_herald and n != "p6"]:
            rows += _figure(name, ctx, out)
    if "p6" in names:
        rows += _figure("p6", ctx, out)
    return rows


def _figure(name: str, ctx: Context, out: Callable[[str], None]) -> list[Row]:
    figure = FIGURES[name]
    out(f"\n== {figure.title}")
    try:
        rows = figure.run(ctx)
    except RuntimeError as err:
        rows = [Row(figure.title, None, "", note=f"failed: {err}")]
    for row in rows:
        out(format_row(row))
    return rows


def format_row(row: Row) -> str:
    if row.value is None:
        return f"{row.figure:<48} {'not available':>12}   {row.note}"
    text = f"{row.figure:<48} {row.value:>12,.1f} {row.unit}"
    for name, value in row.baselines:
        ratio = row.value / value if value else float("nan")
        text += f" | {name} {value:,.1f} ({ratio:.2f}x)"
    return text + (f" | {row.note}" if row.note else "")


def _machine() -> str:
    import platform

    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    return (f"machine: {os.cpu_count()} cores ({cpu}), {psutil.virtual_memory().total / 2**30:.0f} GiB, "
            f"load average {load}; python {platform.python_version()}")  # fmt: skip


def main(args: object) -> int:
    """``herald bench`` (serve_app/cli.py parses the options)."""
    import logging

    logging.getLogger("httpx").setLevel(logging.WARNING)
    names = [n.strip() for n in str(args.only).split(",") if n.strip()]
    connections = tuple(int(c) for c in str(args.connections).split(","))
    work_dir = Path(tempfile.mkdtemp(prefix="herald-bench-"))
    ctx = Context(
        duration_s=float(args.duration),
        connections=connections,
        n=int(args.n),
        batch_size=int(args.batch_size),
        environ=dict(os.environ),
        work_dir=work_dir,
    )
    try:
        run(names, ctx)
    finally:
        shutil.rmtree(work_dir, ignore_errors=True)
    return 0
