"""The dashboard server the CLI runs: `await serve(...)` inside the caller's event loop,
beside a worker or anything else, until the task is cancelled.

uvicorn normally takes over SIGINT/SIGTERM; here the host process owns the signals and
stops the server by cancelling `serve`, which then shuts down gracefully and returns.

Files: while it runs, the process creates files readable by its owner only (umask 077):
NiceGUI writes its session files from its own tasks and threads, so no narrower switch
would catch them all. The storage directory is made 0700 and files an earlier version left
in it 0600.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import pathlib
import socket
from typing import Iterator

import nicegui
import uvicorn
from nicegui.storage import Storage

from jobsys import aio
from jobsys.system import JobSystem
from nicegui_app.app import build_app
from nicegui_app.auth import PRIVATE_DIR_MODE, PRIVATE_FILE_MODE, ApiToken, load_or_create_token, private_dir
from nicegui_app.hub import EventHub
from nicegui_app.services import Services
from nicegui_app.supabase_auth import SupabaseAuth

__all__ = ["load_or_create_token", "serve"]

GRACEFUL_SHUTDOWN_S = 3  # open websockets are closed after this (uvicorn takes whole seconds)
PRIVATE_UMASK = 0o077


def _listen(host: str, port: int) -> socket.socket:
    """Bind here, not in uvicorn: uvicorn answers a busy port with sys.exit(), which would
    end the host process; this raises OSError to the caller instead."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    return socket.create_server((host, port), family=family)


class _EmbeddedServer(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield  # the host process handles signals and cancels serve()


async def serve(
    jobs: JobSystem,
    *,
    host: str,
    port: int,
    token: str | ApiToken,
    storage_secret: str,
    storage_dir: pathlib.Path | None = None,
    supabase: SupabaseAuth | None = None,
    public_docs: bool = False,
) -> None:
    """Serve the dashboard and the REST API on host:port until cancelled.

    `token`: the API token's digest (load_or_create_token) or the token itself.
    `storage_dir`: where NiceGUI keeps sessions (default ./.nicegui); e.g. the data dir.
    `supabase`: Supabase mode, where operators log in with their Supabase accounts (pages)
    and access tokens (API) instead of `token`; the caller closes it.
    `public_docs`: /docs and /openapi.json without a token or login."""
    previous_umask = os.umask(PRIVATE_UMASK)
    try:
        await _serve(jobs, host=host, port=port, token=token, storage_secret=storage_secret,
                     storage_dir=storage_dir, supabase=supabase, public_docs=public_docs)
    finally:
        os.umask(previous_umask)


def _private_storage(path: pathlib.Path) -> None:
    """The sessions directory 0700, and anything an earlier version left in it 0600."""
    private_dir(path)
    os.chmod(path, PRIVATE_DIR_MODE)
    for entry in path.iterdir():
        if entry.is_file() and not entry.is_symlink():
            os.chmod(entry, PRIVATE_FILE_MODE)


async def _serve(
    jobs: JobSystem,
    *,
    host: str,
    port: int,
    token: str | ApiToken,
    storage_secret: str,
    storage_dir: pathlib.Path | None,
    supabase: SupabaseAuth | None,
    public_docs: bool,
) -> None:
    if storage_dir is not None:
        Storage.path = storage_dir.resolve()
        nicegui.app.storage = Storage()  # built at import from the old path
    _private_storage(Storage.path)
    async with contextlib.AsyncExitStack() as stack:
        sock = stack.enter_context(_listen(host, port))
        hub = EventHub(push=jobs.transport.supports_push)
        subscription = await jobs.subscribe_dashboard(hub.publish, hub.set_state)
        stack.push_async_callback(subscription.close)
        safety = asyncio.create_task(hub.run_safety_refresh(), name="dashboard safety refresh")
        stack.push_async_callback(_cancel, safety)

        svc = Services(jobs=jobs, hub=hub, token=token, supabase=supabase)
        app = build_app(svc, storage_secret=storage_secret, public_docs=public_docs)
        server = _EmbeddedServer(
            uvicorn.Config(
                app,
                host=host,
                port=port,
                log_level="warning",
                access_log=False,
                lifespan="on",
                timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S,
            )
        )
        task = asyncio.create_task(server.serve(sockets=[sock]), name="dashboard server")
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError:
            server.should_exit = True  # graceful: finish responses, close websockets, run shutdown
            await task
            raise


async def _cancel(task: asyncio.Task[None]) -> None:
    await aio.cancel_and_wait([task])
