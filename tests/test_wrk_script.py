"""P1's wrk script sends a recipient, code and idempotency key of their own per request, in every run: a
later run (the warm-up, then each connection count) repeating an earlier one's recipients and codes
within the dedupe window would measure deduplicated messages instead of sent ones."""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "loadtests" / "post_notification.lua"


class Recorder(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.requests: list[tuple[str, dict[str, object]]] = []
        self.lock = threading.Lock()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: Recorder

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        with self.server.lock:
            self.server.requests.append((self.headers["Idempotency-Key"], body))
        self.send_response(202)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def recorder() -> Iterator[Recorder]:
    server = Recorder()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join(5)


def run_wrk(url: str) -> None:
    exe = shutil.which("wrk")
    if exe is None:
        pytest.fail("wrk is not installed (apt-get install -y wrk)")
    subprocess.run([exe, "-t1", "-c2", "-d1s", "-s", str(SCRIPT), url], check=True, capture_output=True, timeout=60)


def test_two_runs_send_no_recipient_code_or_key_twice(recorder: Recorder) -> None:
    url = f"http://127.0.0.1:{recorder.server_address[1]}"
    run_wrk(url)
    first = len(recorder.requests)
    run_wrk(url)
    assert first > 10 and len(recorder.requests) > first + 10
    runs = [recorder.requests[:first], recorder.requests[first:]]
    sends = [{(json.dumps(b["to"]), json.dumps(b["variables"])) for _, b in run} for run in runs]
    keys = [{k for k, _ in run} for run in runs]
    assert not sends[0] & sends[1]  # a later run repeats no recipient with its code
    assert not keys[0] & keys[1]
    assert len(sends[0]) == first and len(keys[0]) == first  # nor does one run repeat itself
