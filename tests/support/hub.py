"""A real hub in the test's event loop: uvicorn on a loopback port serving jobsys_hub at
/hub, on the test database, as `jobsys up` mounts it."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import pathlib
from typing import AsyncIterator

import uvicorn
from starlette.applications import Starlette
from starlette.routing import Mount

from jobsys import aio, hub_protocol
from jobsys.system import JobSystem
from jobsys.transport.postgres import PostgresTransport
from jobsys_hub.app import Hub
from nicegui_app.server import bind_port
from tests.support.waiting import wait_until

PING_S = 1.0  # the server's keep-alive, short so half-open sockets are caught within a test


@dataclasses.dataclass
class RunningHub:
    url: str
    hub: Hub
    admin: JobSystem  # the hub's own connection: the service

    async def enrol(self, name: str) -> str:
        """A new worker account; its token."""
        return (await self.admin.add_worker_account(name)).token


@contextlib.asynccontextmanager
async def running_hub(db_url: str, data_dir: pathlib.Path, *, ping_s: float = PING_S) -> AsyncIterator[RunningHub]:
    transport = await PostgresTransport(db_url).open()
    sock = bind_port("127.0.0.1", 0)  # as the dashboard binds its port (TCP_NODELAY on accepted connections)
    port = sock.getsockname()[1]
    try:
        async with Hub(transport, data_dir) as hub:
            config = uvicorn.Config(Starlette(routes=[Mount(hub_protocol.MOUNT, hub.app)]), log_level="warning",
                                    lifespan="off", ws_ping_interval=ping_s, ws_ping_timeout=ping_s)
            server = uvicorn.Server(config)
            task = asyncio.create_task(server.serve(sockets=[sock]), name="test hub")
            await wait_until(lambda: server.started or task.done(), what="the hub to listen")
            try:
                yield RunningHub(f"http://127.0.0.1:{port}", hub, JobSystem(transport))
            finally:
                server.should_exit = True
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(asyncio.shield(task), 5)
                await aio.cancel_and_wait([task])
    finally:
        sock.close()
        await transport.close()
