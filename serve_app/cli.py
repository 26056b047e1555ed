"""The ``herald`` command: up, demo, token, send, migrate, fakes, bench, config."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import re
import secrets
import shlex
import signal
import sys
import threading
import time
from typing import Any

from engine.errors import ConfigurationError
from engine.settings import Settings, load_settings

log = logging.getLogger("herald")


def _setup_logging(level: str) -> None:
    from engine import redaction

    redaction.configure(level)


def cmd_config(settings: Settings, args: argparse.Namespace) -> int:
    """Print the settings as read from the environment (secrets masked); main() already failed on a bad one."""
    from engine.settings import settings_view

    if args.check:
        print("configuration ok")
        return 0
    rows = settings_view(settings)
    width = max(len(f"{name}={value}") for name, value, _ in rows)
    for name, value, from_env in rows:
        line = f"{name}={value}"
        print(line if from_env else f"{line:<{width}}  # default")
    return 0


def cmd_migrate(settings: Settings, _: argparse.Namespace) -> int:
    from engine.storage.migrate import migrate_url
    from serve_app.stack import resolve_database_url

    applied = asyncio.run(migrate_url(resolve_database_url(settings)))
    print(f"applied {len(applied)} migration(s): {', '.join(f'{m.version:04d}_{m.name}' for m in applied) or 'none'}")
    return 0


async def _ensure_tenant(settings: Settings, slug: str) -> None:
    from engine.storage.migrate import migrate_url
    from engine.storage.repository import Repository, create_pool
    from serve_app.stack import resolve_database_url

    url = resolve_database_url(settings)
    await migrate_url(url)  # an unreachable database is named here, not in a traceback
    pool = await create_pool(url, min_size=1, max_size=1)
    try:
        await Repository(pool).ensure_tenant(slug)
    finally:
        await pool.close()


def make_token(
    settings: Settings, tenant: str | None, *, admin: bool = False, platform: bool = False, ttl_s: int | None = None
) -> str:
    """A tenant's token (the tenant is created with defaults if new), or with ``platform`` the platform
    operator's (scope ``platform``, no tenant)."""
    from engine.auth import ADMIN, issue_platform_token, issue_token
    from engine.tenant_service import SLUG_PATTERN

    lifetime = {} if ttl_s is None else {"ttl_s": ttl_s}
    if platform:
        return issue_platform_token(settings.secret(), **lifetime)
    if not tenant:
        raise ConfigurationError("name a tenant (--tenant SLUG) or ask for the platform's token (--platform)")
    if not re.fullmatch(SLUG_PATTERN, tenant):
        raise ConfigurationError(f"--tenant {tenant!r}: a tenant's slug matches {SLUG_PATTERN}")
    asyncio.run(_ensure_tenant(settings, tenant))
    scopes = ("send", "read", "templates") + ((ADMIN,) if admin else ())
    return issue_token(settings.secret(), tenant, scopes=scopes, **lifetime)


def cmd_token(settings: Settings, args: argparse.Namespace) -> int:
    if args.platform and args.admin:
        raise ConfigurationError("--admin is a tenant scope; a platform token has the platform scope only")
    if not 1 <= args.days <= 3660:
        raise ConfigurationError(f"--days {args.days}: from 1 to 3660")
    print(make_token(settings, args.tenant, admin=args.admin, platform=args.platform, ttl_s=args.days * 86400))
    return 0


def _channel_of(to: str) -> str:
    """The channel ``herald send`` infers when none is named: an email address or an E.164 number's."""
    if "@" in to:
        return "email"
    from engine.models import E164

    if E164.match(to):
        return "sms"
    raise ConfigurationError(f"--to {to!r} is not an email address or an E.164 number: name its --channel")


def _payload(args: argparse.Namespace) -> dict[str, Any]:
    variables: dict[str, Any] = {}
    for item in args.var or []:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise ConfigurationError(f"--var {item!r}: give it as NAME=VALUE")
        variables[name] = value
    channel = args.channel or _channel_of(args.to)
    address_field = {"email": "email", "sms": "phone", "whatsapp": "phone", "inapp": "user_id"}.get(
        channel, "device_token"
    )
    body: dict[str, Any] = {
        "channel": channel,
        "template_id": args.template,
        "to": {address_field: args.to},
        "variables": variables,
        "priority": args.priority,
    }
    if args.locale:
        body["locale"] = args.locale
    return body


def _check_answering(settings: Settings) -> None:
    """Fail with the address when no Herald listens there (before a token is made for nothing)."""
    import socket

    try:
        socket.create_connection((settings.http_host, settings.http_port), timeout=3).close()
    except OSError as err:
        raise ConfigurationError(
            f"no Herald answers at {settings.base_url} ({err.strerror or err}): start one with `herald up`, "
            "or set HERALD_HTTP_HOST / HERALD_HTTP_PORT to where it listens"
        ) from None


def send_and_wait(settings: Settings, token: str, body: dict[str, Any], key: str, *, wait_s: float) -> dict[str, Any]:
    """POST the notification and follow it to a final status (or ``wait_s``); a refusal raises SendRefused."""
    import httpx

    base = f"http://{settings.http_host}:{settings.http_port}"
    headers = {"Authorization": f"Bearer {token}", "Idempotency-Key": key}
    with httpx.Client(base_url=base, timeout=10) as client:
        created = client.post("/api/notifications", json=body, headers=headers)
        print(f"POST /api/notifications -> {created.status_code} {created.text}")
        if created.status_code != 202:
            raise SendRefused(created.status_code)
        if wait_s <= 0:
            return created.json()
        message_id = created.json()["message_id"]
        deadline = time.monotonic() + wait_s
        view: dict[str, Any] = {}
        while time.monotonic() < deadline:
            view = client.get(f"/api/notifications/{message_id}", headers=headers).json()
            if view.get("status") not in ("queued", "scheduled", "sending", "throttled"):
                break
            time.sleep(0.2)
        return view


class SendRefused(Exception):
    """The API did not accept the notification (its answer is printed already)."""

    def __init__(self, status_code: int) -> None:
        super().__init__(f"POST /api/notifications answered {status_code}")
        self.status_code = status_code


def cmd_send(settings: Settings, args: argparse.Namespace) -> int:
    """Exit 0 once accepted (and, with --wait, not failed, dead or expired); 1 when refused or failed."""
    import uuid

    body = _payload(args)
    _check_answering(settings)
    token = make_token(settings, args.tenant)
    try:
        view = send_and_wait(settings, token, body, args.idempotency_key or uuid.uuid4().hex, wait_s=args.wait)
    except SendRefused:
        return 1
    print(json.dumps(view, indent=2))
    return 0 if view.get("status") not in ("failed", "dead", "expired") else 1


class StopSignals:
    """SIGINT and SIGTERM for the long-running commands.

    While starting, the first signal raises KeyboardInterrupt, so start-up unwinds into the stop; while
    running it ends :meth:`wait`; once stopping, later signals are only noted (the stop is bounded).
    """

    def __init__(self) -> None:
        self.requested = threading.Event()
        self.starting = True
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, self._handle)

    def _handle(self, signum: int, _frame: object) -> None:
        name = signal.Signals(signum).name
        if self.requested.is_set():
            log.warning("%s: already stopping", name)
            return
        self.requested.set()
        log.info("%s: stopping", name)
        if self.starting:
            raise KeyboardInterrupt

    def wait(self) -> None:
        self.starting = False
        while not self.requested.wait(1.0):
            pass


def cmd_up(settings: Settings, args: argparse.Namespace) -> int:
    from serve_app.stack import Stack

    signals = StopSignals()
    stack = Stack(settings)
    fakes = None
    try:
        stack.prepare()  # fails fast: the data directory in use, or the HTTP port taken
        if args.fake_providers:
            fakes = _start_fakes(settings)
            stack.settings = load_settings()  # now pointing every provider at its emulator
        stack.start()
        print(f"Herald is up at {settings.base_url}  (Ctrl-C to stop)", flush=True)
        print("  get a token:  herald token --tenant t_001", flush=True)
        signals.wait()
        log.info("stopping: finishing in-flight work")
    except KeyboardInterrupt:
        log.info("stopping: interrupted while starting")
    finally:
        signals.starting = False
        stack.stop()
        if fakes is not None:
            fakes.stop()
    return 0


def _start_fakes(settings: Settings) -> Any:
    """Start the emulators and point this process's provider settings at them.

    Their settings are also written to ``$HERALD_DATA_DIR/fakes.env``, to look at what they received
    (``curl $HERALD_TWILIO_BASE_URL/_received``) or script their state. They report deliveries to
    Herald's webhooks under ``HERALD_PUBLIC_URL`` (where Herald listens, when it is not set), with the
    keys and secrets that verify them in the settings.
    """
    import os

    from drivers.fakes import FAKE_PROVIDERS, run_fakes

    settings.data_dir.mkdir(parents=True, exist_ok=True)
    public_url = settings.base_url
    try:
        fakes = run_fakes(settings.data_dir / "fakes", public_url=public_url)
    except ImportError as err:
        raise ConfigurationError(f"the provider emulators need: pip install -e '.[fakes]' ({err})") from err
    fakes.env.setdefault("HERALD_PUBLIC_URL", public_url)
    os.environ.update(fakes.env)
    for name, providers in FAKE_PROVIDERS.items():
        os.environ.setdefault(name, providers)
    env_file = settings.data_dir / "fakes.env"
    env_file.write_text("".join(f"export {name}={shlex.quote(value)}\n" for name, value in sorted(fakes.env.items())))
    log.info(
        "provider emulators running (settings in %s); providers: %s",
        env_file,
        ", ".join(f"{k}={os.environ[k]}" for k in FAKE_PROVIDERS),
    )
    return fakes


def cmd_fakes(settings: Settings, __: argparse.Namespace) -> int:
    signals = StopSignals()
    fakes = None
    try:
        fakes = _start_fakes(settings)
        for name, value in sorted(fakes.env.items()):
            print(f"export {name}={shlex.quote(value)}", flush=True)
        signals.wait()
    except KeyboardInterrupt:
        pass  # stopped while starting
    finally:
        if fakes is not None:
            fakes.stop()
    return 0


def cmd_demo(settings: Settings, _: argparse.Namespace) -> int:
    from drivers.email.console import console_path
    from serve_app.stack import Stack

    signals = StopSignals()  # any signal while the demo runs unwinds into the stop
    stack = Stack(settings)
    # A fresh code each run: a repeat of the same one within the auth category's dedupe window (30 s)
    # is the same content, and Herald rightly ends it deduplicated instead of sending it again.
    code = f"{secrets.randbelow(10**6):06d}"
    try:
        stack.start()
        token = make_token(settings, "t_001")
        body = {
            "channel": "email",
            "template_id": "otp_login:v3",
            "locale": "en-GB",
            "to": {"email": "ada@example.com"},
            "variables": {"code": code, "ttl": 5},
            "priority": "high",
            "metadata": {"category": "auth", "tags": ["otp", "login"]},
        }
        import uuid

        view = send_and_wait(settings, token, body, f"demo-{uuid.uuid4().hex[:12]}", wait_s=30)
        _show_demo(view, console_path({"HERALD_DATA_DIR": str(settings.data_dir)}))
        return 0 if view.get("status") == "sent" else 1
    except SendRefused:
        return 1
    except KeyboardInterrupt:
        log.info("stopping: interrupted")
        return 1
    finally:
        signals.starting = False
        stack.stop()


def _show_demo(view: dict[str, Any], console_file: Any) -> None:
    message_id = view.get("message_id")
    record = None
    if console_file.exists():
        for line in console_file.read_text().splitlines():
            doc = json.loads(line)
            if doc.get("message_id") == message_id:
                record = doc
    print("\n=== what the console email provider sent", f"({console_file}) ===")
    if record:
        print(f"To: {record['to']}\nFrom: {record['from']}\nSubject: {record['subject']}\n\n{record['text']}")
    print("\n=== final status (GET /api/notifications/{id}) ===")
    print(json.dumps({k: view.get(k) for k in ("message_id", "status", "provider", "locale", "template_id")}, indent=2))
    for event in view.get("events", []):
        print(f"  {event['at']}  {event['type']}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="herald", description="Herald notification dispatch engine")
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="start Herald in the foreground (Ctrl-C stops it cleanly)")
    up.add_argument("--fake-providers", action="store_true", help="point every provider at local emulators")
    sub.add_parser("demo", help="start Herald, send one notification, show it, stop")
    token = sub.add_parser("token", help="print a bearer token for a tenant (created if new) or the platform")
    who = token.add_mutually_exclusive_group(required=True)
    who.add_argument("--tenant", help="the tenant's slug: scopes send, read, templates (and admin with --admin)")
    who.add_argument("--platform", action="store_true", help="the platform operator's token (scope platform)")
    token.add_argument("--admin", action="store_true", help="include the admin scope (tenant tokens)")
    token.add_argument("--days", type=int, default=30, help="how long the token is valid (default 30)")
    send = sub.add_parser("send", help="send one notification through the running API")
    send.add_argument("--tenant", default="t_001")
    send.add_argument(
        "--channel",
        choices=["email", "sms", "push", "whatsapp", "inapp"],
        help="default: email for an address with @, sms for an E.164 number",
    )
    send.add_argument("--template", default="otp_login")
    send.add_argument("--to", required=True, help="address: email, E.164 phone, device token or user id")
    send.add_argument("--var", action="append", help="template variable NAME=VALUE (repeatable)")
    send.add_argument("--locale")
    send.add_argument("--priority", default="normal", choices=["high", "normal", "low"])
    send.add_argument("--idempotency-key")
    send.add_argument("--wait", type=float, default=15.0, help="seconds to wait for a final status (0: don't)")
    sub.add_parser("migrate", help="apply pending database migrations")
    sub.add_parser("fakes", help="run the provider emulators in the foreground")
    bench = sub.add_parser("bench", help="start Herald and its baselines, print each throughput figure beside them")
    bench.add_argument("--duration", type=float, default=10.0, help="seconds of load per measurement")
    bench.add_argument("--connections", default="4,32", help="P1: wrk connections, comma-separated")
    bench.add_argument("--n", type=int, default=20000, help="P2/P3: notifications")
    bench.add_argument("--batch-size", type=int, default=1000, help="P2: notifications per batch")
    bench.add_argument("--only", default="p1,p2,p3,p6,locust", help="figures, comma-separated (p1,p2,p3,p6,locust)")
    config = sub.add_parser("config", help="print the settings read from the environment (secrets masked)")
    config.add_argument("--check", action="store_true", help="only validate: print 'configuration ok' or the error")
    return parser


def cmd_bench(_: Settings, args: argparse.Namespace) -> int:
    from loadtests.suite import main as bench_main

    return bench_main(args)


COMMANDS = {
    "up": cmd_up,
    "bench": cmd_bench,
    "demo": cmd_demo,
    "token": cmd_token,
    "send": cmd_send,
    "migrate": cmd_migrate,
    "fakes": cmd_fakes,
    "config": cmd_config,
}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = load_settings()
    except ConfigurationError as err:
        print(f"herald: {err}", file=sys.stderr)
        return 2
    _setup_logging(settings.log_level)
    try:
        return COMMANDS[args.command](settings, args)
    except ConfigurationError as err:
        print(f"herald: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
