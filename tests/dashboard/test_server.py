"""serve(): the dashboard and API on a real port inside the caller's loop, stopped by
cancellation. This is how `jobsys up` runs it beside a worker."""

from __future__ import annotations

import asyncio
import pathlib
import socket

import httpx
import pytest
from nicegui.storage import Storage

from jobsys.system import JobSystem
from nicegui_app.server import serve
from tests.core.helpers import add_worker
from tests.support.processes import free_port
from tests.support.waiting import wait_until

TOKEN = "server-test-token"


async def test_serve_runs_api_and_pages_until_cancelled(
    clean_nicegui: None, jobs: JobSystem, tmp_path: pathlib.Path
) -> None:
    await add_worker(jobs, "w1", 2)
    port = free_port()
    task = asyncio.create_task(
        serve(jobs, host="127.0.0.1", port=port, token=TOKEN, storage_secret="s", storage_dir=tmp_path)
    )
    base = f"http://127.0.0.1:{port}"
    async with httpx.AsyncClient(base_url=base, timeout=5) as client:

        async def up() -> bool:
            try:
                return (await client.get("/login")).status_code == 200
            except httpx.TransportError:
                return False

        await wait_until(up, what="server up")
        auth = {"Authorization": f"Bearer {TOKEN}"}
        devices = await client.get("/api/devices", headers=auth)
        assert devices.status_code == 200 and devices.json()["summary"]["connected"] == 2
        assert (await client.get("/api/devices")).status_code == 401
        unknown = await client.get("/api/nothing", headers=auth)
        assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "not_found"
        assert (await client.get("/openapi.json")).status_code == 401
        assert (await client.get("/openapi.json", headers=auth)).status_code == 200
        docs = await client.get("/docs")  # for a browser logged in to the dashboard
        assert docs.status_code == 303 and docs.headers["location"] == "/login?to=%2Fdocs"

        page = await client.get("/")
        assert page.status_code == 303 and page.headers["location"].startswith("/login")
        login = await client.get("/login")
        assert login.status_code == 200 and "<html" in login.text.lower()
        assert Storage.path == tmp_path.resolve()  # sessions kept where the caller said

    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, timeout=10)
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # ignore TIME_WAIT, not a listener
        probe.bind(("127.0.0.1", port))  # nobody listens any more


async def test_busy_port_raises_instead_of_exiting(clean_nicegui: None, jobs: JobSystem) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        with pytest.raises(OSError):
            await serve(jobs, host="127.0.0.1", port=port, token=TOKEN, storage_secret="s")
