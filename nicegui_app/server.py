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
import dataclasses
import os
import pathlib
import socket
from typing import Iterator, Mapping

import nicegui
import uvicorn
from nicegui.storage import Storage
from starlette.types import ASGIApp

from jobsys import aio
from jobsys.system import JobSystem
from nicegui_app.api.health import ReadyCheck
from nicegui_app.api.metrics import Gauge
from nicegui_app.app import build_app
from nicegui_app.auth import PRIVATE_DIR_MODE, PRIVATE_FILE_MODE, ApiToken, load_or_create_token, private_dir
from nicegui_app.hub import EventHub
from nicegui_app.services import Services
from nicegui_app.supabase_auth import SupabaseAuth

__all__ = ["TlsFiles", "load_or_create_token", "serve"]

GRACEFUL_SHUTDOWN_S = 3  # open websockets are closed after this (uvicorn takes whole seconds)
# Server-side keep-alive of every WebSocket (the hub's worker sockets included): a peer
# that answers no ping within WS_PING_TIMEOUT_S is closed.
WS_PING_INTERVAL_S = 10.0
WS_PING_TIMEOUT_S = 10.0
PRIVATE_UMASK = 0o077
LISTEN_BACKLOG = 2048  # uvicorn's own default


def bind_port(host: str, port: int) -> socket.socket:
    """Bind here, not in uvicorn: uvicorn answers a busy port with sys.exit(), which would
    end the host process; this raises OSError to the caller instead.

    The socket is made with IPPROTO_TCP, not 0 as socket.create_server makes it: asyncio
    sets TCP_NODELAY only on connections accepted from such a socket. Without it, every small
    answer (a hub worker's heartbeat, an API read) waited ~40 ms for the client's delayed ACK."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(LISTEN_BACKLOG)
    except OSError:
        sock.close()
        raise
    return sock


@dataclasses.dataclass(frozen=True)
class TlsFiles:
    """A PEM certificate (chain) and its key, for HTTPS and WSS on the dashboard's port."""

    cert: pathlib.Path
    key: pathlib.Path


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
    mounts: Mapping[str, ASGIApp] | None = None,
    ready_checks: Mapping[str, ReadyCheck] | None = None,
    tls: TlsFiles | None = None,
    evidence_dir: pathlib.Path | None = None,
    gauges: Mapping[str, Gauge] | None = None,
    metrics_public: bool = False,
) -> None:
    """Serve the dashboard and the REST API on host:port until cancelled.

    `token`: the API token's digest (load_or_create_token) or the token itself.
    `storage_dir`: where NiceGUI keeps sessions (default ./.nicegui); e.g. the data dir.
    `supabase`: Supabase mode, where operators log in with their Supabase accounts (pages)
    and access tokens (API) instead of `token`; the caller closes it.
    `public_docs`: /docs and /openapi.json without a token or login.
    `mounts`: other apps on the same port (the hub at /hub); `ready_checks`: theirs for /readyz;
    `gauges`: theirs for /metrics. `metrics_public`: /metrics without a token.
    `tls`: serve HTTPS (and WSS) with this certificate and key.
    `evidence_dir`: the hub's screenshots, served to operators (nicegui_app.screenshots)."""
    previous_umask = os.umask(PRIVATE_UMASK)
    try:
        await _serve(jobs, host=host, port=port, token=token, storage_secret=storage_secret,
                     storage_dir=storage_dir, supabase=supabase, public_docs=public_docs, mounts=mounts,
                     ready_checks=ready_checks, tls=tls, evidence_dir=evidence_dir, gauges=gauges,
                     metrics_public=metrics_public)
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
    mounts: Mapping[str, ASGIApp] | None,
    ready_checks: Mapping[str, ReadyCheck] | None,
    tls: TlsFiles | None,
    evidence_dir: pathlib.Path | None = None,
    gauges: Mapping[str, Gauge] | None = None,
    metrics_public: bool = False,
) -> None:
    if storage_dir is not None:
        Storage.path = storage_dir.resolve()
        nicegui.app.storage = Storage()  # built at import from the old path
    _private_storage(Storage.path)
    async with contextlib.AsyncExitStack() as stack:
        sock = stack.enter_context(bind_port(host, port))
        hub = EventHub(push=jobs.transport.supports_push)
        subscription = await jobs.subscribe_dashboard(hub.publish, hub.set_state)
        stack.push_async_callback(subscription.close)
        safety = asyncio.create_task(hub.run_safety_refresh(), name="dashboard safety refresh")
        stack.push_async_callback(_cancel, safety)

        svc = Services(jobs=jobs, hub=hub, token=token, supabase=supabase, evidence_dir=evidence_dir)
        app = build_app(svc, storage_secret=storage_secret, public_docs=public_docs, mounts=mounts,
                        ready_checks=ready_checks, gauges=gauges, metrics_public=metrics_public)
        server = _EmbeddedServer(
            uvicorn.Config(
                app,
                host=host,
                port=port,
                log_level="warning",
                access_log=False,
                lifespan="on",
                timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S,
                ws_ping_interval=WS_PING_INTERVAL_S,
                ws_ping_timeout=WS_PING_TIMEOUT_S,
                ssl_certfile=tls.cert if tls else None,
                ssl_keyfile=tls.key if tls else None,
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
