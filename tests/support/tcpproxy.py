"""A TCP forwarding proxy the tests can cut, to play a network outage between Herald and a server.

It runs its own event loop in a background thread, so sync tests, async tests and other processes
(Ray actors connect to its port) all see the same behaviour.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading


class TcpProxy:
    def __init__(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="tcpproxy", daemon=True)
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._cut = False
        self.target: tuple[str, int] = ("127.0.0.1", 0)

    def start(self, target_host: str, target_port: int, listen_port: int = 0) -> int:
        """Start forwarding to ``target``; returns the port to connect to."""
        self.target = (target_host, target_port)
        self._thread.start()
        future = asyncio.run_coroutine_threadsafe(self._serve(listen_port), self._loop)
        return future.result(timeout=10)

    async def _serve(self, port: int) -> int:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", port)
        return int(self._server.sockets[0].getsockname()[1])

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._cut:
            writer.close()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.close()
            return
        self._writers.update({writer, up_writer})
        await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while chunk := await reader.read(65536):
                writer.write(chunk)
                await writer.drain()
        except (ConnectionError, OSError):
            pass  # the other side went away: closing below is all there is to do
        finally:
            self._writers.discard(writer)
            with contextlib.suppress(ConnectionError, OSError, RuntimeError):
                writer.close()

    def cut(self) -> None:
        """Drop every live connection and refuse new ones."""

        async def drop() -> None:
            self._cut = True
            for w in list(self._writers):
                w.transport.abort()
            self._writers.clear()

        asyncio.run_coroutine_threadsafe(drop(), self._loop).result(timeout=10)

    def restore(self) -> None:
        self._cut = False

    def stop(self) -> None:
        if self._server is not None:
            self.cut()
            self._loop.call_soon_threadsafe(self._server.close)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)
