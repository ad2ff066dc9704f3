"""`jobsys dashboard`: the NiceGUI dashboard and the REST API, with the upkeep loop; also
the dashboard part of `jobsys up`."""

from __future__ import annotations

import argparse
import asyncio
import secrets
import socket
from typing import TYPE_CHECKING, Any

from jobsys import aio, config, hub_protocol
from jobsys.embedded import default_data_dir
from jobsys.system import JobSystem
from jobsys_cli import process
from jobsys_cli.options import add_database_options, add_server_options
from jobsys_cli.upkeep import sweep_screenshots, upkeep

if TYPE_CHECKING:
    from nicegui_app.server import TlsFiles


async def serve_dashboard(jobs: JobSystem, args: argparse.Namespace) -> None:
    """Serve with the API token: $JOBSYS_API_TOKEN, or one generated at the first start and
    printed then; the data dir keeps only its hash."""
    from nicegui_app.auth import ENV_API_TOKEN, TOKEN_FILE_NAME, TokenFileError, load_or_create_session_secret
    from jobsys_hub.app import Hub
    from nicegui_app.server import load_or_create_token, serve

    data_dir = args.data_dir or default_data_dir()
    try:
        token, generated = load_or_create_token(data_dir)
    except TokenFileError as exc:
        raise process.CommandError(str(exc)) from None
    url = public_url(args)
    if generated:
        print(f"dashboard: {url}  (API token, shown once: {generated} ; the data dir keeps only its hash)",
              flush=True)
    else:
        print(f"dashboard: {url}  (API token: ${ENV_API_TOKEN}, or the one printed at the first start; "
              f"{data_dir / TOKEN_FILE_NAME} keeps only its hash)", flush=True)
    async with Hub(jobs.transport, data_dir) as hub:  # type: ignore[arg-type]  # Postgres here
        print(f"hub: PCs join with `jobsys worker --server {public_url(args)} --token <token>`; "
              "`jobsys workers add NAME` makes a PC's token", flush=True)
        sweeper = asyncio.create_task(sweep_screenshots(jobs, hub.evidence_dir), name="screenshot sweep")
        try:
            await serve(jobs, host=args.host, port=args.port, token=token,
                        storage_secret=load_or_create_session_secret(data_dir),
                        storage_dir=data_dir / "nicegui", public_docs=args.public_docs,
                        mounts={hub_protocol.MOUNT: hub.app}, ready_checks={"hub_push": hub.ready_check},
                        tls=tls_files(args), evidence_dir=hub.evidence_dir, metrics_public=args.metrics_public,
                        gauges={"jobsys_hub_websockets": ("Push sockets of PCs open on this hub",
                                                          lambda: hub.fanout.peer_count)})
        finally:
            await aio.cancel_and_wait([sweeper])


def public_url(args: argparse.Namespace) -> str:
    """How other PCs reach this server: a wildcard address becomes this machine's name."""
    scheme = "https" if args.tls_cert else "http"
    host = socket.gethostname() if args.host in ("0.0.0.0", "::", "") else args.host
    return f"{scheme}://{f'[{host}]' if ':' in host else host}:{args.port}"


def tls_files(args: argparse.Namespace) -> TlsFiles | None:
    from nicegui_app.server import TlsFiles

    if bool(args.tls_cert) != bool(args.tls_key):
        raise process.CommandError("--tls-cert and --tls-key go together")
    if not args.tls_cert:
        return None
    for path in (args.tls_cert, args.tls_key):
        if not path.is_file():
            raise process.CommandError(f"no such file: {path}")
    return TlsFiles(args.tls_cert, args.tls_key)


async def _dashboard_main(args: argparse.Namespace, url: str) -> None:
    stop = process.stop_on_signals()
    async with await JobSystem.connect(url) as jobs:
        # Upkeep here too: with no worker running, expired leases are still rescued and a
        # throttled progress event still gets its trailing update.
        parts = [asyncio.create_task(upkeep(jobs), name="upkeep"),
                 asyncio.create_task(serve_dashboard(jobs, args), name="dashboard")]
        await process.until_stopped(stop, parts)


async def _supabase_dashboard_main(args: argparse.Namespace) -> None:
    """Supabase mode: operators log in with their Supabase accounts; no API token exists."""
    from jobsys.connect import connect_dashboard_from_env, supabase_project
    from nicegui_app.server import serve
    from nicegui_app.supabase_auth import SupabaseAuth

    stop = process.stop_on_signals()
    url, anon_key = supabase_project()
    async with await connect_dashboard_from_env() as jobs:
        supabase = await SupabaseAuth.connect(url, anon_key)
        try:
            print(f"dashboard: http://{args.host}:{args.port}  (Supabase mode: log in with an operator's "
                  "Supabase account; the API takes its access token)", flush=True)
            # Operator sessions live in memory only, so a per-process cookie secret loses nothing.
            dashboard = serve(jobs, host=args.host, port=args.port, token="", supabase=supabase,
                              storage_secret=secrets.token_hex(32),
                              storage_dir=default_data_dir() / "nicegui", public_docs=args.public_docs,
                              metrics_public=args.metrics_public)
            await process.until_stopped(stop, [asyncio.create_task(dashboard, name="dashboard")])
        finally:
            await supabase.close()


def cmd_dashboard(args: argparse.Namespace) -> int:
    from jobsys.connect import supabase_configured  # loads the Supabase client: only when run

    if supabase_configured() and not (args.database_url or args.data_dir):
        asyncio.run(_supabase_dashboard_main(args))
        return 0
    with config.database(args.database_url, args.data_dir) as db:
        asyncio.run(_dashboard_main(args, db.url))
    return 0


def add_parser(subparsers: Any) -> None:
    dashboard = subparsers.add_parser(
        "dashboard", help="serve the dashboard and REST API",
        description="Serve the NiceGUI dashboard and the REST API (OpenAPI at /docs). "
                    "Every route needs the bearer token: $JOBSYS_API_TOKEN, or one "
                    "generated and printed at the first start (the data dir keeps only its "
                    "hash). Supabase mode "
                    "(SUPABASE_URL and SUPABASE_ANON_KEY set, no --database-url): "
                    "operators log in with their Supabase accounts and the API takes "
                    "their access tokens; JOBSYS_EMAIL / JOBSYS_PASSWORD of an operator "
                    "give the dashboard live push.")
    add_database_options(dashboard)
    add_server_options(dashboard)
    dashboard.set_defaults(handler=cmd_dashboard)
