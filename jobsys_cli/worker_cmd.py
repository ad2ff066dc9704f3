"""`jobsys worker`: a PC worker for the devices attached to this machine; also the
simulated worker of `jobsys up`."""

from __future__ import annotations

import argparse
import asyncio
import os
import pathlib
import socket
from typing import TYPE_CHECKING, Any

from jobsys import aio, config, errors
from jobsys.config import ENV_DATABASE_URL, ENV_SERVER, ENV_WORKER_TOKEN
from jobsys.embedded import ENV_DATA_DIR, default_data_dir
from jobsys.system import JobSystem
from jobsys_cli import process
from jobsys_cli.health_port import health_address, serve_health
from jobsys_cli.options import add_database_options

if TYPE_CHECKING:
    from worker.options import WorkerOptions


def add_sim_options(parser: argparse.ArgumentParser, *, default_devices: int) -> None:
    """The simulated-device and evidence flags (`jobsys up` has only these of the worker's)."""
    parser.add_argument("--sim-devices", type=int, default=default_devices, metavar="N",
                        help=f"simulated devices (default {default_devices}; 0 for none)")
    parser.add_argument("--sim-failure-rate", type=float, default=0.0, metavar="P",
                        help="share of simulated runs that fail, 0..1 (default 0)")
    parser.add_argument("--sim-speed", type=float, default=1.0, metavar="X",
                        help="simulated time runs X times faster (default 1)")
    parser.add_argument("--evidence-dir", type=pathlib.Path,
                        help="where screenshots go (default: <data dir>/evidence)")


def worker_options(args: argparse.Namespace, name: str, driver: str) -> WorkerOptions:
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
        browser_package=getattr(args, "browser_package", None),
    )


async def run_worker(jobs: JobSystem, options: WorkerOptions, stop: asyncio.Event,
                     health: tuple[str, int] | None = None) -> None:
    """Run a worker until `stop`; then it stops claiming and finishes within its grace.
    `health`: serve /healthz and /readyz there for a process supervisor."""
    from worker.agent import Worker

    worker = Worker(jobs, options)
    task = asyncio.create_task(worker.run(), name="worker")
    others = [] if health is None else [asyncio.create_task(serve_health(health, worker.readiness,
                                                                         worker.metrics.exposition),
                                                            name="health port")]
    await process.until_stopped(stop, others, graceful=[task], on_stop=worker.request_stop)


REFUSED_TOKEN = ("the hub refused this PC's worker token ({reason}); an operator makes a new one with "
                 "`jobsys workers add NAME` (or the dashboard's PC page)")


async def _worker_main(args: argparse.Namespace, url: str | None, server: str | None = None) -> None:
    stop = process.stop_on_signals()
    options = worker_options(args, name=args.name, driver=args.driver)
    if server is not None:  # hub mode: the PC holds the hub's address and its own token, nothing else
        from jobsys.connect import connect_hub

        jobs = await connect_hub(server, args.token or os.environ.get(ENV_WORKER_TOKEN, ""),
                                 push=not args.no_push, evidence_dir=options.evidence_dir,
                                 ca_cert=args.ca_cert)
    elif url is None:  # Supabase mode: signs in as the worker user; no database connection
        from jobsys.auth import JobsysRole
        from jobsys.connect import connect_from_env

        jobs = await connect_from_env(JobsysRole.WORKER, push=not args.no_push)
    else:
        jobs = await JobSystem.connect(url, push=not args.no_push)
    async with jobs:
        await run_worker(jobs, options, stop, args.health_port)


def _run_on_hub(args: argparse.Namespace, server: str) -> None:
    """A worker PC on the hub; a refused token or bad flag is one line and exit status 2."""
    try:
        asyncio.run(_worker_main(args, None, server))
    except errors.Unauthorized as exc:
        raise process.CommandError(REFUSED_TOKEN.format(reason=exc.message)) from None
    except aio.TaskFailed as exc:
        if isinstance(exc.__cause__, errors.Unauthorized):
            raise process.CommandError(REFUSED_TOKEN.format(reason=exc.__cause__.message)) from None
        raise
    except errors.InvalidInput as exc:
        raise process.CommandError(exc.message) from None


def cmd_worker(args: argparse.Namespace) -> int:
    from jobsys.connect import supabase_configured  # loads the Supabase client: only when run

    server = args.server or os.environ.get(ENV_SERVER, "").strip() or None
    if server is not None:
        if args.database_url or args.data_dir:
            raise process.CommandError("--server joins a hub; it takes no --database-url or --data-dir")
        _run_on_hub(args, server)
        return 0
    if supabase_configured() and not (args.database_url or args.data_dir):
        asyncio.run(_worker_main(args, None))
        return 0
    with config.database(args.database_url, args.data_dir) as db:
        asyncio.run(_worker_main(args, db.url))
    return 0


def add_parser(subparsers: Any) -> None:
    from worker import options as defaults

    worker = subparsers.add_parser(
        "worker", help="run a PC worker for the devices attached to this machine",
        description="Register this PC's devices, take their assignments (push via LISTEN/NOTIFY, polling "
                    "every 3 s while push is down) and run them. SIGTERM/Ctrl-C: stop claiming, let running "
                    f"work finish up to --grace seconds, release the rest. Environment: {ENV_DATABASE_URL}, "
                    f"{ENV_DATA_DIR}; a PC joining a hub: --server and --token ({ENV_SERVER}, {ENV_WORKER_TOKEN}); "
                    "Supabase mode: SUPABASE_URL, SUPABASE_ANON_KEY and the worker's "
                    "JOBSYS_EMAIL / JOBSYS_PASSWORD (never the service role key).")
    add_database_options(worker)
    worker.add_argument("--server", metavar="URL",
                        help=f"join the hub at this address, e.g. http://hub-pc:8080 (default: ${ENV_SERVER}); "
                             "the PC then needs no database, only its worker token")
    worker.add_argument("--token", metavar="TOKEN",
                        help=f"this PC's worker token for --server (default: ${ENV_WORKER_TOKEN}, which keeps it "
                             "out of the process list); `jobsys workers add NAME` makes one")
    worker.add_argument("--ca-cert", type=pathlib.Path, metavar="PEM",
                        help="trust this certificate for an https:// --server (a hub with a self-signed one)")
    worker.add_argument("--driver", choices=["uiautomator2", "sim"], default="uiautomator2",
                        help="uiautomator2: real phones over adb (default); sim: simulated devices")
    worker.add_argument("--name", default=socket.gethostname(),
                        help="worker name; simulated serials are stable per name (default: host name)")
    add_sim_options(worker, default_devices=20)
    worker.add_argument("--adb-host", default="127.0.0.1", help="adb server host (default 127.0.0.1)")
    worker.add_argument("--adb-port", type=int, default=5037, help="adb server port (default 5037)")
    worker.add_argument("--browser-package", metavar="PACKAGE",
                        help="browser that opens the URLs on every phone, e.g. com.android.chrome (default: each "
                             "phone's default browser, else Chrome); it is force-stopped after each run")
    worker.add_argument("--health-port", type=health_address, metavar="[HOST:]PORT",
                        help="serve GET /healthz, /readyz and /metrics there for a process supervisor (host default "
                             "127.0.0.1); readyz is 503 naming the failing check: registered, database "
                             "(a heartbeat answered within 3 intervals), push")
    worker.add_argument("--no-push", action="store_true", help="do not LISTEN; poll only")
    worker.add_argument("--poll-interval", type=float, default=defaults.POLL_INTERVAL_S, metavar="S",
                        help=f"poll interval while push is down (default {defaults.POLL_INTERVAL_S:g})")
    worker.add_argument("--heartbeat-interval", type=float, default=defaults.HEARTBEAT_INTERVAL_S,
                        metavar="S", help=f"default {defaults.HEARTBEAT_INTERVAL_S:g}")
    worker.add_argument("--grace", type=float, default=defaults.SHUTDOWN_GRACE_S, metavar="S",
                        help=f"shutdown grace for running work (default {defaults.SHUTDOWN_GRACE_S:g})")
    worker.set_defaults(handler=cmd_worker)
