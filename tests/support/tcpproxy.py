"""A TCP forwarding proxy that tests can cut, to play a network outage between Herald and a server.

It runs its own event loop in a background thread, so sync tests, async tests (whatever their loop) and
other processes (Ray actors connect to its port) all see the same behaviour::

    proxy = TcpProxy()
    port = proxy.start("127.0.0.1", 5672)   # point the client at 127.0.0.1:<port>
    proxy.cut()       # every live connection drops (RST), new ones are accepted and closed at once
    proxy.restore()   # new connections are forwarded again
    proxy.refuse()    # the port stops listening: connects are refused (ECONNREFUSED), as to a dead server
    proxy.listen()    # listening on the same port again
    proxy.stop()      # or use it as a context manager

It forwards bytes only, so it works for AMQP, PostgreSQL, Redis, HTTP alike.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from types import TracebackType
from typing import Any, TypeVar

T = TypeVar("T")
_CHUNK = 65536


class TcpProxy:
    """Forwards ``127.0.0.1:<port>`` to one target; ``cut``/``restore`` play an outage (thread-safe)."""

    def __init__(self, listen_host: str = "127.0.0.1") -> None:
        self.listen_host = listen_host
        self.target: tuple[str, int] = ("127.0.0.1", 0)
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="tcpproxy", daemon=True)
        self._server: asyncio.Server | None = None
        self._transports: set[asyncio.WriteTransport] = set()
        self._handlers: set[asyncio.Task[None]] = set()
        self._cut = False

    def start(self, target_host: str, target_port: int, listen_port: int = 0) -> int:
        """Start forwarding to ``target_host:target_port``; returns the port to connect to."""
        if self._thread.is_alive():
            raise RuntimeError("TcpProxy already started")
        self.target = (target_host, target_port)
        self._thread.start()
        self.port = self._call(self._serve(listen_port))
        return self.port

    @property
    def connections(self) -> int:
        """Live forwarded connections (each counts its client and upstream sockets once)."""
        return len(self._transports) // 2

    def cut(self) -> None:
        """Drop every live connection (reset, as a network failure would) and refuse new ones."""
        self._call(self._drop_all(refuse=True))

    def restore(self) -> None:
        """Accept and forward new connections again."""
        self._call(self._set_refusing(False))

    def refuse(self) -> None:
        """Stop listening (and drop live connections): a connect now gets ECONNREFUSED."""
        self._call(self._close_listener())

    def listen(self) -> None:
        """Listen on the same port again and forward."""
        self._call(self._set_refusing(False))
        self._call(self._serve(self.port))

    def stop(self) -> None:
        """Close the listener and every connection, and end the thread (idempotent)."""
        if not self._thread.is_alive():
            return
        self._call(self._shutdown())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)
        if not self._thread.is_alive():
            self._loop.close()

    def __enter__(self) -> TcpProxy:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def _call(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` on the proxy's loop and wait for it (from any thread but the proxy's own)."""
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout=10)

    async def _serve(self, port: int) -> int:
        self._server = await asyncio.start_server(self._accept, self.listen_host, port)
        return int(self._server.sockets[0].getsockname()[1])

    async def _close_listener(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()
        await self._drop_all(refuse=False)
        if server is not None:
            await asyncio.wait_for(server.wait_closed(), 5)

    async def _set_refusing(self, refusing: bool) -> None:
        self._cut = refusing

    async def _drop_all(self, *, refuse: bool) -> None:
        self._cut = refuse
        for transport in list(self._transports):
            if not transport.is_closing():
                transport.abort()
        self._transports.clear()

    async def _shutdown(self) -> None:
        if self._server is not None:
            self._server.close()
        await self._drop_all(refuse=True)
        if not self._handlers:
            return
        # Aborted sockets end their pipes by themselves; cancel only what is stuck (connecting upstream).
        _, stuck = await asyncio.wait(set(self._handlers), timeout=1)
        for task in stuck:
            task.cancel()
        await asyncio.gather(*stuck, return_exceptions=True)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        try:
            await self._forward(reader, writer)
        except asyncio.CancelledError:
            # Only stop() cancels a handler. Ending normally keeps asyncio's stream machinery from
            # logging the cancellation as an error; the loop stops right after.
            writer.transport.abort()
        finally:
            self._handlers.discard(task)

    async def _forward(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._cut:
            writer.transport.abort()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:  # the target itself is down: the client sees a closed connection, as it would
            writer.transport.abort()
            return
        if self._cut:  # cut while we were connecting upstream
            writer.transport.abort()
            up_writer.transport.abort()
            return
        pair = (writer.transport, up_writer.transport)
        self._transports.update(pair)
        try:
            await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))
        finally:
            self._transports.difference_update(pair)

    @staticmethod
    async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Copy one direction until EOF or a reset, then close the other side so the peer sees it too."""
        try:
            while chunk := await reader.read(_CHUNK):
                writer.write(chunk)
                await writer.drain()
        except (ConnectionError, OSError):
            writer.transport.abort()  # one side was reset (or cut): pass the reset on
        else:
            writer.close()  # an orderly EOF: pass it on after what is still buffered
