"""The dashboard's port (and the hub's on it) answers small requests without Nagle's delay:
connections accepted from it have TCP_NODELAY (asyncio sets it only for IPPROTO_TCP sockets)."""

from __future__ import annotations

import asyncio
import socket

import pytest

from nicegui_app.server import bind_port


async def test_connections_accepted_on_the_dashboard_port_have_tcp_nodelay() -> None:
    accepted: asyncio.Queue[int] = asyncio.Queue()

    async def on_connect(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        sock = writer.get_extra_info("socket")
        await accepted.put(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
        writer.close()

    listening = bind_port("127.0.0.1", 0)
    server = await asyncio.start_server(on_connect, sock=listening)
    async with server:
        _, writer = await asyncio.open_connection("127.0.0.1", listening.getsockname()[1])
        assert await asyncio.wait_for(accepted.get(), 10) != 0
        writer.close()


def test_a_busy_port_is_an_os_error_for_the_caller() -> None:
    first = bind_port("127.0.0.1", 0)
    try:
        with pytest.raises(OSError):
            bind_port("127.0.0.1", first.getsockname()[1])
    finally:
        first.close()
