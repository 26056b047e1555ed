"""APNs provider API emulator: HTTP/2 over TLS (a generated test CA), token (JWT) authentication.

``POST /3/device/{token}`` validated as APNs does, answering ``{"reason": …}``: HTTP/2 only, the method
(405 ``MethodNotAllowed``) and path (404 ``BadPath``), the ES256 provider token signed by the emulator's
``.p8`` key with its key id and team id (403 ``MissingProviderToken``/``InvalidProviderToken``, older
than an hour ``ExpiredProviderToken``), ``apns-topic`` (``MissingTopic``/``BadTopic``), push type,
priority, expiration, collapse id and ``apns-id`` formats, the device token (400 ``BadDeviceToken``),
tokens unregistered since a time (410 ``Unregistered`` + ``timestamp``), empty or oversized payloads.
Success is ``200`` with ``apns-id`` (echoed or generated) and an empty body.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import json
import re
import socket
import ssl
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from h2.config import H2Configuration
from h2.connection import H2Connection
from h2.events import DataReceived, RequestReceived, StreamEnded
from h2.exceptions import H2Error

from drivers.fakes.base import Emulator, Exchange, json_answer

KEY_ID = "EMUKEY0001"
TEAM_ID = "EMUTEAM001"
TOPIC = "com.example.herald"
PUSH_TYPES = frozenset(
    {
        "alert",
        "background",
        "voip",
        "complication",
        "fileprovider",
        "mdm",
        "liveactivity",
        "location",
        "pushtotalk",
        "widgets",
    }
)
_DEVICE = re.compile(r"^[0-9a-fA-F]{64,200}$")
_PATH = re.compile(r"^/3/device/(?P<token>[^/]*)$")
#: Provider tokens older than this are refused (APNs: one hour).
TOKEN_MAX_AGE_S = 3600

Answer = tuple[int, dict[str, str], dict[str, Any] | None]


def _reason(status: int, reason: str, **extra: Any) -> Answer:
    return status, {}, {"reason": reason, **extra}


@dataclass
class ApnsState:
    key_id: str = KEY_ID
    team_id: str = TEAM_ID
    topic: str = TOPIC
    key: ec.EllipticCurvePrivateKey = field(default_factory=lambda: ec.generate_private_key(ec.SECP256R1()))
    unregistered: dict[str, int] = field(default_factory=dict)  #: device token -> invalid since (ms)
    provider_tokens: list[str] = field(default_factory=list)  #: distinct JWTs seen, in order

    def key_pem(self) -> bytes:
        """The ``.p8`` file content (PKCS#8 PEM)."""
        return self.key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )

    def unregister(self, device_token: str, since_ms: int | None = None) -> None:
        self.unregistered[device_token.lower()] = since_ms if since_ms is not None else int(time.time() * 1000)


class ApnsApi:
    """The request handling, independent of the HTTP server that carries it."""

    def __init__(self, state: ApnsState | None = None) -> None:
        self.state = state or ApnsState()

    def push(self, method: str, path: str, http_version: str, headers: dict[str, str], body: bytes) -> Answer:
        """Answer one request as (status, response headers, JSON body or None); every answer names its
        ``apns-id`` (the request's, or a new one), as APNs does."""
        status, extra, doc = self._push(method, path, http_version, headers, body)
        return status, {"apns-id": headers.get("apns-id") or str(uuid.uuid4()), **extra}, doc

    def _push(self, method: str, path: str, http_version: str, headers: dict[str, str], body: bytes) -> Answer:
        if http_version != "2":
            return _reason(400, "BadPath")  # APNs speaks HTTP/2 only
        if method != "POST":
            return _reason(405, "MethodNotAllowed")
        match = _PATH.match(path)
        if match is None:
            return _reason(404, "BadPath")
        problem = self._auth(headers.get("authorization"))
        if problem is not None:
            return problem
        problem = self._headers(headers)
        if problem is not None:
            return problem
        device = match["token"]
        if not device:
            return _reason(400, "MissingDeviceToken")
        if not _DEVICE.match(device):
            return _reason(400, "BadDeviceToken")
        problem = self._payload(headers.get("apns-push-type", "alert"), body)
        if problem is not None:
            return problem
        if device.lower() in self.state.unregistered:
            return _reason(410, "Unregistered", timestamp=self.state.unregistered[device.lower()])
        return 200, {}, None

    def _auth(self, authorization: str | None) -> Answer | None:
        if not authorization or not authorization.lower().startswith("bearer "):
            return _reason(403, "MissingProviderToken")
        token = authorization[7:].strip()
        try:
            header = jwt.get_unverified_header(token)
            claims = jwt.decode(
                token, self.state.key.public_key(), algorithms=["ES256"], options={"require": ["iat", "iss"]}
            )
        except jwt.PyJWTError:
            return _reason(403, "InvalidProviderToken")
        if header.get("kid") != self.state.key_id or claims.get("iss") != self.state.team_id:
            return _reason(403, "InvalidProviderToken")
        if time.time() - float(claims["iat"]) > TOKEN_MAX_AGE_S:
            return _reason(403, "ExpiredProviderToken")
        if token not in self.state.provider_tokens:
            self.state.provider_tokens.append(token)
        return None

    def _headers(self, headers: dict[str, str]) -> Answer | None:
        topic = headers.get("apns-topic")
        push_type = headers.get("apns-push-type", "alert")
        if not topic:
            return _reason(400, "MissingTopic")
        if push_type not in PUSH_TYPES:
            return _reason(400, "InvalidPushType")
        allowed = {
            self.state.topic,
            *(
                self.state.topic + s
                for s in (".voip", ".complication", ".pushkit.fileprovider", ".push-type.liveactivity")
            ),
        }
        if topic not in allowed:
            return _reason(400, "BadTopic")
        if push_type == "voip" and not topic.endswith(".voip"):
            return _reason(400, "DeviceTokenNotForTopic")
        priority = headers.get("apns-priority", "10")
        if priority not in ("1", "5", "10") or (push_type == "background" and priority == "10"):
            return _reason(400, "BadPriority")
        if "apns-expiration" in headers and not headers["apns-expiration"].isdigit():
            return _reason(400, "BadExpirationDate")
        if len(headers.get("apns-collapse-id", "").encode()) > 64:
            return _reason(400, "BadCollapseId")
        if "apns-id" in headers:
            try:
                uuid.UUID(headers["apns-id"])
            except ValueError:
                return _reason(400, "BadMessageId")
        return None

    def _payload(self, push_type: str, body: bytes) -> Answer | None:
        if not body.strip():
            return _reason(400, "PayloadEmpty")
        if len(body) > (5120 if push_type == "voip" else 4096):
            return _reason(413, "PayloadTooLarge")
        try:
            doc = json.loads(body)
        except ValueError:
            return _reason(400, "BadPayload")  # not in Apple's table; APNs answers 400 for invalid JSON
        if not isinstance(doc, dict) or not isinstance(doc.get("aps"), dict):
            return _reason(400, "PayloadEmpty")
        return None


@dataclass(frozen=True, slots=True)
class TlsFiles:
    ca_file: Path
    cert_file: Path
    key_file: Path


def make_tls(directory: Path, hosts: tuple[str, ...] = ("127.0.0.1", "localhost")) -> TlsFiles:
    """A throwaway CA and a server certificate for ``hosts``, written as PEM files in ``directory``."""
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Herald APNs emulator CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=7))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0])]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=7))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    directory.mkdir(parents=True, exist_ok=True)
    files = TlsFiles(directory / "apns-ca.pem", directory / "apns-cert.pem", directory / "apns-key.pem")
    files.ca_file.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    files.cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    files.key_file.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return files


def env_for(base_url: str, key_file: str, ca_file: str, *, state: ApnsState | None = None) -> dict[str, str]:
    """The settings that point the APNs driver at an emulator."""
    s = state or ApnsState()
    return {
        "HERALD_APNS_KEY_FILE": key_file,
        "HERALD_APNS_KEY_ID": s.key_id,
        "HERALD_APNS_TEAM_ID": s.team_id,
        "HERALD_APNS_TOPIC": s.topic,
        "HERALD_APNS_BASE_URL": base_url,
        "HERALD_APNS_CA_FILE": ca_file,
    }


class ApnsEmulator(Emulator):
    """The APNs provider API (serve it with :class:`H2TlsServer`)."""

    name = "apns"

    def __init__(self, state: ApnsState | None = None) -> None:
        super().__init__()
        self.api = ApnsApi(state)

    def handle(self, request: Exchange) -> tuple[int, dict[str, str], bytes]:
        status, headers, doc = self.api.push(
            request.method, request.path, request.http_version, request.headers, request.body
        )
        if doc is None:
            return status, headers, b""
        return json_answer(status, doc, headers)

    def reset_state(self) -> None:
        self.api.state.unregistered.clear()
        self.api.state.provider_tokens.clear()

    def control(self, doc: dict[str, Any]) -> dict[str, Any]:
        """``{"unregistered": {token: since_ms | null}}``."""
        for token, since in (doc.get("unregistered") or {}).items():
            self.api.state.unregister(token, since)
        return {"provider_tokens": len(self.api.state.provider_tokens)}


class H2TlsServer:
    """Serves an emulator over HTTP/2 + TLS (ALPN ``h2``) with the ``h2`` state machine directly, so that
    an answer without a body ends its stream on the HEADERS frame, as APNs does (an ASGI server sends a
    trailing empty DATA frame, which aioapns cannot parse). Runs in its own thread and event loop."""

    def __init__(self, emulator: Emulator, tls: TlsFiles) -> None:
        self.emulator = emulator
        self._context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self._context.load_cert_chain(tls.cert_file, tls.key_file)
        self._context.set_alpn_protocols(["h2"])
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", 0))
        self.port = int(self._sock.getsockname()[1])
        self.url = f"https://127.0.0.1:{self.port}"
        self._loop = asyncio.new_event_loop()
        self._server: asyncio.Server | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"fake-{emulator.name}", daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError(f"{emulator.name} emulator did not start")

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._server = self._loop.run_until_complete(
            asyncio.start_server(self._serve, sock=self._sock, ssl=self._context)
        )
        self._ready.set()
        self._loop.run_forever()
        self._loop.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = H2Connection(H2Configuration(client_side=False, header_encoding="utf-8"))
        conn.initiate_connection()
        writer.write(conn.data_to_send())
        streams: dict[int, tuple[dict[str, str], bytearray]] = {}
        try:
            while data := await reader.read(65535):
                for event in conn.receive_data(data):
                    await self._on_event(conn, event, streams)
                writer.write(conn.data_to_send())
                await writer.drain()
        except (H2Error, ConnectionError, ssl.SSLError):
            pass  # a client that does not speak HTTP/2, or went away: APNs drops it too
        finally:
            writer.close()

    async def _on_event(
        self, conn: H2Connection, event: Any, streams: dict[int, tuple[dict[str, str], bytearray]]
    ) -> None:
        if isinstance(event, RequestReceived):
            streams[event.stream_id] = ({str(k): str(v) for k, v in event.headers}, bytearray())
        elif isinstance(event, DataReceived):
            streams[event.stream_id][1].extend(event.data)
            conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
        elif isinstance(event, StreamEnded) and event.stream_id in streams:
            headers, body = streams.pop(event.stream_id)
            request = Exchange(
                method=headers.get(":method", ""),
                path=headers.get(":path", ""),
                headers={k.lower(): v for k, v in headers.items() if not k.startswith(":")},
                body=bytes(body),
                base_url=self.url,
                http_version="2",
            )
            status, answer_headers, payload = await self.emulator.respond(request)
            out = [(":status", str(status)), *answer_headers.items()]
            if payload:
                conn.send_headers(event.stream_id, [*out, ("content-length", str(len(payload)))])
                conn.send_data(event.stream_id, payload, end_stream=True)
            else:
                conn.send_headers(event.stream_id, out, end_stream=True)

    async def _shutdown(self) -> None:
        if self._server is not None:
            self._server.close()
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._loop.stop()

    def stop(self) -> None:
        if self._thread.is_alive():
            asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop)
            self._thread.join(10)


def start_apns(directory: Path, state: ApnsState | None = None) -> tuple[H2TlsServer, dict[str, str]]:
    """Start the APNs emulator (TLS + HTTP/2); writes its CA, certificate and ``.p8`` key in ``directory``."""
    emulator = ApnsEmulator(state)
    server = H2TlsServer(emulator, make_tls(directory))
    key_file = directory / f"AuthKey_{emulator.api.state.key_id}.p8"
    key_file.write_bytes(emulator.api.state.key_pem())
    key_file.chmod(0o600)
    return server, env_for(server.url, str(key_file), str(directory / "apns-ca.pem"), state=emulator.api.state)
