"""The console provider's sink: one JSON line per message in ``<data dir>/console.jsonl``.

The file is the console drivers' contract (what a developer reads, what tests count). Like providers
that honour an idempotency key, the sink writes a message id once: a resend of an id already in the
file (a redelivery after a sender died between sending and recording) is acknowledged without a second
line. Several sender processes share the file under an ``flock``.
"""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any


class ConsoleSink:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._seen: set[str] = set()
        self._indexed_bytes = 0

    def write(self, records: Sequence[dict[str, Any]]) -> list[bool]:
        """Append records not already written; ``True`` where the record was new."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a+b") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                self._catch_up(fh)
                fresh: list[bool] = []
                lines: list[bytes] = []
                for record in records:
                    key = str(record["message_id"])
                    is_new = key not in self._seen
                    fresh.append(is_new)
                    if is_new:
                        self._seen.add(key)
                        lines.append(json.dumps(record, ensure_ascii=False).encode() + b"\n")
                if lines:
                    fh.seek(0, os.SEEK_END)
                    fh.write(b"".join(lines))
                    fh.flush()
                    self._indexed_bytes = fh.tell()
                return fresh
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def _catch_up(self, fh: Any) -> None:
        """Index lines other processes appended since this process last looked."""
        fh.seek(0, os.SEEK_END)
        size = fh.tell()
        if size < self._indexed_bytes:  # truncated or replaced: index from scratch
            self._seen.clear()
            self._indexed_bytes = 0
        if size == self._indexed_bytes:
            return
        fh.seek(self._indexed_bytes)
        for line in fh.read(size - self._indexed_bytes).splitlines():
            if line.strip():
                try:
                    self._seen.add(str(json.loads(line)["message_id"]))
                except (ValueError, KeyError):
                    continue  # a foreign or partial line is not ours to interpret
        self._indexed_bytes = size
