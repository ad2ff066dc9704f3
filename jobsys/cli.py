"""The `jobsys` command: up, migrate, dashboard, worker, batch-runner, batch."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import errno
import logging
import pathlib
import signal
import socket
import sys
from typing import TYPE_CHECKING

from jobsys import aio, migrations
from jobsys.config import ENV_DATABASE_URL, resolve_database
from jobsys.embedded import ENV_DATA_DIR, default_data_dir

if TYPE_CHECKING:
    from jobsys.system import JobSystem
    from worker.options import WorkerOptions

log = logging.getLogger("jobsys")

UPKEEP_INTERVAL_S = 1.0  # `jobsys up` and `jobsys dashboard` run rescue / stale marking / top-up this often


def _add_database_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--database-url", help=f"Postgres URL (default: ${ENV_DATABASE_URL}, else embedded)")
    parser.add_argument("--data-dir", type=pathlib.Path,
                        help=f"embedded Postgres data directory (default: ${ENV_DATA_DIR} or the user data dir); "
                             "give the same one as a running `jobsys up` to join it")


def _add_server_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1", help="dashboard and API address (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8080, help="dashboard and API port (default 8080)")


def _add_worker_options(parser: argparse.ArgumentParser, *, default_devices: int) -> None:
    parser.add_argument("--sim-devices", type=int, default=default_devices, metavar="N",
                        help=f"simulated devices (default {default_devices}; 0 for none)")
    parser.add_argument("--sim-failure-rate", type=float, default=0.0, metavar="P",
                        help="share of simulated runs that fail, 0..1 (default 0)")
    parser.add_argument("--sim-speed", type=float, default=1.0, metavar="X",
                        help="simulated time runs X times faster (default 1)")
    parser.add_argument("--evidence-dir", type=pathlib.Path,
                        help="where screenshots go (default: <data dir>/evidence)")


def _worker_options(args: argparse.Namespace, name: str, driver: str) -> WorkerOptions:
    """Options from flags; `jobsys up` has only the simulated-device ones, so the rest default."""
    from worker import options

    data_dir = args.data_dir or default_data_dir()
    return options.WorkerOptions(
        name=name, driver=driver, evidence_dir=args.evidence_dir or data_dir / "evidence",
        sim_devices=args.sim_devices, sim_failure_rate=args.sim_failure_rate, sim_speed=args.sim_speed,
        push=not getattr(args, "no_push", False),
        poll_interval_s=getattr(args, "poll_interval", options.POLL_INTERVAL_S),
        heartbeat_interval_s=getattr(args, "heartbeat_interval", options.HEARTBEAT_INTERVAL_S),
        shutdown_grace_s=getattr(args, "grace", options.SHUTDOWN_GRACE_S),
        adb_host=getattr(args, "adb_host", "127.0.0.1"), adb_port=getattr(args, "adb_port", 5037),
    )


def _stop_event() -> asyncio.Event:
    """Set on SIGINT/SIGTERM. Installed before anything says it is up, so a signal that
    arrives at once still stops cleanly."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    return stop


def cmd_migrate(args: argparse.Namespace) -> int:
    url, embedded = resolve_database(args.database_url, args.data_dir)
    try:
        applied = migrations.migrate(url)
        print(f"applied {len(applied)} migration(s)" + (f": {', '.join(applied)}" if applied else " (up to date)"))
    finally:
        if embedded:
            embedded.stop()
    return 0


async def _upkeep(jobs: JobSystem) -> None:
    """Lease rescue, stale marking and top-up for setups where no worker heartbeats."""
    from jobsys import errors

    while True:
        with contextlib.suppress(errors.JobsysError):
            await jobs.maintain()
        await asyncio.sleep(UPKEEP_INTERVAL_S)  # pacing of a periodic task


async def _run_worker(jobs: JobSystem, options: WorkerOptions, stop: asyncio.Event) -> None:
    from worker.agent import Worker

    worker = Worker(jobs, options)
    task = asyncio.create_task(worker.run())
    waiter = asyncio.create_task(stop.wait())
    await asyncio.wait([task, waiter], return_when=asyncio.FIRST_COMPLETED)
    worker.request_stop()
    waiter.cancel()
    await task


async def _serve_dashboard(jobs: JobSystem, args: argparse.Namespace) -> None:
    import hashlib

    from nicegui_app.auth import TOKEN_FILE_NAME
    from nicegui_app.server import load_or_create_token, serve

    data_dir = args.data_dir or default_data_dir()
    token, generated = load_or_create_token(data_dir)
    url = f"http://{args.host}:{args.port}"
    if generated:
        print(f"dashboard: {url}  (API token, shown once: {token})", flush=True)
    else:
        print(f"dashboard: {url}  (API token: $JOBSYS_API_TOKEN or the file {data_dir / TOKEN_FILE_NAME})", flush=True)
    secret = hashlib.sha256(b"jobsys-session:" + token.encode()).hexdigest()
    await serve(jobs, host=args.host, port=args.port, token=token, storage_secret=secret,
                storage_dir=data_dir / "nicegui")


async def _until_stopped(stop: asyncio.Event, tasks: list[asyncio.Task[None]],
                         graceful: list[asyncio.Task[None]] | None = None) -> None:
    """Wait for Ctrl-C or for a part to end; then let the `graceful` parts (which watch
    `stop` themselves, like the worker) finish, cancel the rest, and re-raise a failure."""
    graceful = graceful or []
    waiter = asyncio.create_task(stop.wait())
    await asyncio.wait([waiter, *tasks, *graceful], return_when=asyncio.FIRST_COMPLETED)
    waiter.cancel()
    stop.set()
    graceful_results = await asyncio.gather(*graceful, return_exceptions=True)
    results = await aio.cancel_and_wait(tasks)
    for result in [*graceful_results, *results]:
        if isinstance(result, Exception):
            raise result


async def _up(args: argparse.Namespace, url: str, where: str, applied: list[str]) -> None:
    from jobsys.system import JobSystem

    stop = _stop_event()
    async with await JobSystem.connect(url) as jobs:
        tasks = [asyncio.create_task(_upkeep(jobs), name="upkeep"),
                 asyncio.create_task(_serve_dashboard(jobs, args), name="dashboard")]
        from jobsys.batch import cli as batch_cli

        graceful = [asyncio.create_task(batch_cli.run_runner(jobs, stop), name="batch-runner")]
        if args.sim_devices > 0:
            options = _worker_options(args, name=f"{socket.gethostname()}-sim", driver="sim")
            graceful.append(asyncio.create_task(_run_worker(jobs, options, stop), name="worker"))
        print(f"jobsys is up on {where} ({len(applied)} new migration(s)); "
              f"{args.sim_devices} simulated device(s). Ctrl-C stops it.", flush=True)
        await _until_stopped(stop, tasks, graceful)


async def _dashboard_main(args: argparse.Namespace, url: str) -> None:
    from jobsys.system import JobSystem

    stop = _stop_event()
    async with await JobSystem.connect(url) as jobs:
        # Upkeep here too: with no worker running, expired leases are still rescued and a
        # throttled progress event still gets its trailing update.
        await _until_stopped(stop, [asyncio.create_task(_upkeep(jobs), name="upkeep"),
                                    asyncio.create_task(_serve_dashboard(jobs, args), name="dashboard")])


async def _supabase_dashboard_main(args: argparse.Namespace) -> None:
    """Supabase mode: operators log in with their Supabase accounts; no API token exists."""
    import secrets

    from jobsys.connect import connect_dashboard_from_env, supabase_project
    from nicegui_app.server import serve
    from nicegui_app.supabase_auth import SupabaseAuth

    stop = _stop_event()
    url, anon_key = supabase_project()
    async with await connect_dashboard_from_env() as jobs:
        supabase = await SupabaseAuth.connect(url, anon_key)
        try:
            print(f"dashboard: http://{args.host}:{args.port}  (Supabase mode: log in with an operator's "
                  "Supabase account; the API takes its access token)", flush=True)
            # Operator sessions live in memory only, so a per-process cookie secret loses nothing.
            dashboard = serve(jobs, host=args.host, port=args.port, token="", supabase=supabase,
                              storage_secret=secrets.token_hex(32),
                              storage_dir=default_data_dir() / "nicegui")
            await _until_stopped(stop, [asyncio.create_task(dashboard, name="dashboard")])
        finally:
            await supabase.close()


def cmd_dashboard(args: argparse.Namespace) -> int:
    from jobsys.connect import supabase_configured

    if supabase_configured() and not (args.database_url or args.data_dir):
        asyncio.run(_supabase_dashboard_main(args))
        return 0
    url, embedded = resolve_database(args.database_url, args.data_dir)
    try:
        asyncio.run(_dashboard_main(args, url))
    finally:
        if embedded:
            embedded.stop()
    return 0


def cmd_up(args: argparse.Namespace) -> int:
    url, embedded = resolve_database(args.database_url, args.data_dir)
    try:
        applied = migrations.migrate(url)
        where = f"embedded Postgres in {embedded.data_dir}" if embedded else "the database at --database-url"
        asyncio.run(_up(args, url, where, applied))
        print("stopped", flush=True)
    finally:
        if embedded:
            embedded.stop()
    return 0


async def _worker_main(args: argparse.Namespace, url: str | None) -> None:
    from jobsys.system import JobSystem

    stop = _stop_event()
    options = _worker_options(args, name=args.name, driver=args.driver)
    if url is None:  # Supabase mode: signs in as the worker user; no database connection
        from jobsys.auth import JobsysRole
        from jobsys.connect import connect_from_env

        jobs = await connect_from_env(JobsysRole.WORKER, push=not args.no_push)
    else:
        jobs = await JobSystem.connect(url, push=not args.no_push)
    async with jobs:
        await _run_worker(jobs, options, stop)


def cmd_worker(args: argparse.Namespace) -> int:
    from jobsys.connect import supabase_configured

    if supabase_configured() and not (args.database_url or args.data_dir):
        asyncio.run(_worker_main(args, None))
        return 0
    url, embedded = resolve_database(args.database_url, args.data_dir)
    try:
        asyncio.run(_worker_main(args, url))
    finally:
        if embedded:
            embedded.stop()
    return 0


def build_parser() -> argparse.ArgumentParser:
    from worker import options as worker_defaults

    parser = argparse.ArgumentParser(prog="jobsys", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    up = sub.add_parser("up", help="start everything on the embedded default",
                        description="Start Postgres (embedded unless --database-url), apply migrations, the dashboard "
                                    "and API, a worker with simulated devices, an AI batch runner and the "
                                    "upkeep loop; run until Ctrl-C.")
    _add_database_options(up)
    _add_server_options(up)
    _add_worker_options(up, default_devices=20)
    up.set_defaults(handler=cmd_up)

    dashboard = sub.add_parser("dashboard", help="serve the dashboard and REST API",
                               description="Serve the NiceGUI dashboard and the REST API (OpenAPI at /docs). "
                                           "Every route needs the bearer token: $JOBSYS_API_TOKEN, or one "
                                           "generated at first start and kept in the data dir. Supabase mode "
                                           "(SUPABASE_URL and SUPABASE_ANON_KEY set, no --database-url): "
                                           "operators log in with their Supabase accounts and the API takes "
                                           "their access tokens; JOBSYS_EMAIL / JOBSYS_PASSWORD of an operator "
                                           "give the dashboard live push.")
    _add_database_options(dashboard)
    _add_server_options(dashboard)
    dashboard.set_defaults(handler=cmd_dashboard)

    migrate = sub.add_parser("migrate", help="apply supabase/migrations to the database",
                             description="Apply the migrations that are missing; safe to repeat.")
    _add_database_options(migrate)
    migrate.set_defaults(handler=cmd_migrate)

    worker = sub.add_parser(
        "worker", help="run a PC worker for the devices attached to this machine",
        description="Register this PC's devices, take their assignments (push via LISTEN/NOTIFY, polling "
                    "every 3 s while push is down) and run them. SIGTERM/Ctrl-C: stop claiming, let running "
                    f"work finish up to --grace seconds, release the rest. Environment: {ENV_DATABASE_URL}, "
                    f"{ENV_DATA_DIR}; Supabase mode: SUPABASE_URL, SUPABASE_ANON_KEY and the worker's "
                    "JOBSYS_EMAIL / JOBSYS_PASSWORD (never the service role key).")
    _add_database_options(worker)
    worker.add_argument("--driver", choices=["uiautomator2", "sim"], default="uiautomator2",
                        help="uiautomator2: real phones over adb (default); sim: simulated devices")
    worker.add_argument("--name", default=socket.gethostname(),
                        help="worker name; simulated serials are stable per name (default: host name)")
    _add_worker_options(worker, default_devices=20)
    worker.add_argument("--adb-host", default="127.0.0.1", help="adb server host (default 127.0.0.1)")
    worker.add_argument("--adb-port", type=int, default=5037, help="adb server port (default 5037)")
    worker.add_argument("--no-push", action="store_true", help="do not LISTEN; poll only")
    worker.add_argument("--poll-interval", type=float, default=worker_defaults.POLL_INTERVAL_S, metavar="S",
                        help=f"poll interval while push is down (default {worker_defaults.POLL_INTERVAL_S:g})")
    worker.add_argument("--heartbeat-interval", type=float, default=worker_defaults.HEARTBEAT_INTERVAL_S,
                        metavar="S", help=f"default {worker_defaults.HEARTBEAT_INTERVAL_S:g}")
    worker.add_argument("--grace", type=float, default=worker_defaults.SHUTDOWN_GRACE_S, metavar="S",
                        help=f"shutdown grace for running work (default {worker_defaults.SHUTDOWN_GRACE_S:g})")
    worker.set_defaults(handler=cmd_worker)

    from jobsys.batch import cli as batch_cli

    batch_cli.add_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s %(message)s")
    if not args.verbose:
        logging.getLogger("pgserver").setLevel(logging.WARNING)  # it logs every pg_ctl call at INFO
        logging.getLogger("psycopg.pool").setLevel(logging.WARNING)
        logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request otherwise
    try:
        return int(args.handler(args) or 0)
    except OSError as exc:
        if exc.errno != errno.EADDRINUSE:
            raise
        print(f"jobsys: {exc.strerror} ({getattr(args, 'host', '')}:{getattr(args, 'port', '')}); "
              "choose another with --port", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
