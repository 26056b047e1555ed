"""A webhook receiver for tests: an HTTP server on a loopback port that records every POST and answers
500 to the next ``fail[path]`` requests on a path (to get retries)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass(frozen=True)
class Delivery:
    path: str
    headers: dict[str, str]
    body: bytes
    answered: int

    @property
    def doc(self) -> dict[str, Any]:
        loaded: dict[str, Any] = json.loads(self.body)
        return loaded


class Receiver:
    """A tenant's webhook server: records every request, answers 500 to the next ``fail[path]`` of them."""

    def __init__(self) -> None:
        self.deliveries: list[Delivery] = []
        self.fail: dict[str, int] = {}
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                with receiver.lock:
                    failing = receiver.fail.get(self.path, 0) > 0
                    if failing:
                        receiver.fail[self.path] -= 1
                    status = 500 if failing else 200
                    headers = {k.lower(): v for k, v in self.headers.items()}
                    receiver.deliveries.append(Delivery(self.path, headers, body, status))
                self.send_response(status)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *_: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}{path}"

    def at(self, path: str) -> list[Delivery]:
        with self.lock:
            return [d for d in self.deliveries if d.path == path]

    def wait(self, path: str, done: Callable[[list[Delivery]], bool], timeout_s: float = 30) -> list[Delivery]:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            found = self.at(path)
            if done(found):
                return found
            time.sleep(0.1)
        raise AssertionError(f"{path}: {[(d.body[:200], d.answered) for d in self.at(path)]}")

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
