"""`jobsys up`: everything on the embedded default in one process: migrations, the
dashboard and API, a worker with simulated devices, an AI batch runner and upkeep."""

from __future__ import annotations

import argparse
import asyncio
import socket
from typing import Any

from jobsys import config, migrations
from jobsys.batch.runner import RunnerOptions, run_runner
from jobsys.system import JobSystem
from jobsys_cli import process
from jobsys_cli.batch_runner_cmd import add_rate_options
from jobsys_cli.dashboard import serve_dashboard
from jobsys_cli.options import add_database_options, add_server_options
from jobsys_cli.upkeep import upkeep
from jobsys_cli.worker_cmd import add_sim_options, run_worker, worker_options


def up_runner_options(args: argparse.Namespace) -> RunnerOptions:
    """The embedded runner's options: --rpm / --tpm shared with any other runner on this database."""
    return RunnerOptions(rpm=args.rpm, tpm=args.tpm)


async def _up(args: argparse.Namespace, url: str, where: str, applied: list[str]) -> None:
    stop = process.stop_on_signals()
    async with await JobSystem.connect(url) as jobs:
        tasks = [asyncio.create_task(upkeep(jobs), name="upkeep"),
                 asyncio.create_task(serve_dashboard(jobs, args), name="dashboard")]
        graceful = [asyncio.create_task(run_runner(jobs, stop, up_runner_options(args)), name="batch-runner")]
        if args.sim_devices > 0:
            options = worker_options(args, name=f"{socket.gethostname()}-sim", driver="sim")
            graceful.append(asyncio.create_task(run_worker(jobs, options, stop), name="worker"))
        print(f"jobsys is up on {where} ({len(applied)} new migration(s)); "
              f"{args.sim_devices} simulated device(s). Ctrl-C stops it.", flush=True)
        await process.until_stopped(stop, tasks, graceful=graceful)


def cmd_up(args: argparse.Namespace) -> int:
    with config.database(args.database_url, args.data_dir) as db:
        applied = migrations.migrate(db.url)
        where = f"embedded Postgres in {db.embedded_dir}" if db.embedded else "the database at --database-url"
        asyncio.run(_up(args, db.url, where, applied))
        print("stopped", flush=True)
    return 0


def add_parser(subparsers: Any) -> None:
    up = subparsers.add_parser(
        "up", help="start everything on the embedded default",
        description="Start Postgres (embedded unless --database-url), apply migrations, the dashboard "
                    "and API, a worker with simulated devices, an AI batch runner and the "
                    "upkeep loop; run until Ctrl-C.")
    add_database_options(up)
    add_server_options(up)
    add_sim_options(up, default_devices=20)
    add_rate_options(up)
    up.set_defaults(handler=cmd_up)
