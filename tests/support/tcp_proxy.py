"""A TCP proxy between two local processes, to cut or stall their link in a test.

`cut()` closes every open connection (as a dropped link looks to both ends: a reset);
`stall()` keeps the connections open but forwards nothing either way (a half-open link:
only a keep-alive notices); `heal()` forwards again. New connections are accepted
throughout and follow the current mode.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import AsyncIterator

CHUNK = 65536


class TcpProxy:
    def __init__(self, target_port: int, target_host: str = "127.0.0.1") -> None:
        self._target = (target_host, target_port)
        self._server: asyncio.Server | None = None
        self._links: set[tuple[asyncio.StreamWriter, asyncio.StreamWriter]] = set()
        self._flowing = asyncio.Event()
        self._flowing.set()
        self.port = 0
        self.connections = 0  # accepted since the start

    async def start(self) -> TcpProxy:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    @property
    def open_links(self) -> int:
        return len(self._links)

    async def _accept(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(*self._target)
        except OSError:
            client_writer.close()
            return
        link = (client_writer, upstream_writer)
        self._links.add(link)
        try:
            await asyncio.gather(self._pipe(client_reader, upstream_writer),
                                 self._pipe(upstream_reader, client_writer), return_exceptions=True)
        except asyncio.CancelledError:
            pass  # the proxy is closing; asyncio would log a cancelled connection handler as an error
        finally:
            self._links.discard(link)
            for writer in link:
                writer.close()

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(CHUNK):
                await self._flowing.wait()
                writer.write(data)
                await writer.drain()
        finally:
            writer.close()

    def cut(self) -> int:
        """Abort every open connection; how many there were."""
        links = list(self._links)
        for link in links:
            for writer in link:
                writer.transport.abort()
        return len(links)

    def stall(self) -> None:
        self._flowing.clear()

    def heal(self) -> None:
        self._flowing.set()

    async def close(self) -> None:
        self.cut()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()


@contextlib.asynccontextmanager
async def tcp_proxy(target_port: int) -> AsyncIterator[TcpProxy]:
    proxy = await TcpProxy(target_port).start()
    try:
        yield proxy
    finally:
        await proxy.close()
