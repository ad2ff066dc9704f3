"""A Procrastinate worker process for bench/procrastinate_peer.py: Procrastinate's own
Worker (App.run_worker_async) on the benchmark's database, with the peer's tasks, reporting
the moments the benchmark measures.

    python -m bench.procrastinate_child --database-url URL --name NAME --concurrency N [...]

stdout, one JSON line each:
  {"kind": "started", "job": id, "t": wall}   a task began (the worker fetched its job and
      called the task function); wall-clock time (time.time()), as the parent reads it
With --stalled-after S the process also runs Procrastinate's documented stalled-job retry
(howto/production/retry_stalled_jobs: JobManager.get_stalled_jobs, then retry_job for each),
every --sweep-interval seconds beside the worker. SIGTERM stops the worker as Procrastinate
does (running jobs finish first); the benchmark uses SIGKILL for the crash.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
import time
from typing import Any

import procrastinate

HOLD_FIRST_ATTEMPT_S = 60.0  # a first attempt of `hold` outlives the kill


def say(kind: str, **fields: Any) -> None:
    sys.stdout.write(json.dumps({"kind": kind, **fields}) + "\n")
    sys.stdout.flush()


def make_app(url: str, report: bool = False) -> procrastinate.App:
    """The peer's tasks. `noop` does nothing (latency, throughput); `hold` stands for a device
    run of the crash scenario: its first attempt lasts until the kill, a retry `seconds`.
    With `report`, each task start is a line on stdout."""
    app = procrastinate.App(connector=procrastinate.PsycopgConnector(conninfo=url))

    @app.task(name="noop", pass_context=True)
    async def noop(context: procrastinate.JobContext) -> None:
        if report:
            say("started", job=context.job.id, t=time.time())

    @app.task(name="hold", pass_context=True)
    async def hold(context: procrastinate.JobContext, seconds: float) -> None:
        if report:
            say("started", job=context.job.id, t=time.time())
        await asyncio.sleep(seconds if context.job.attempts > 0 else HOLD_FIRST_ATTEMPT_S)

    return app


async def retry_stalled_jobs(app: procrastinate.App, stalled_after_s: float, every_s: float) -> None:
    """The body of the periodic task Procrastinate's docs give, run every `every_s` seconds
    (a periodic task's cron cannot go below one second)."""
    while True:
        await asyncio.sleep(every_s)
        for job in await app.job_manager.get_stalled_jobs(seconds_since_heartbeat=stalled_after_s):
            await app.job_manager.retry_job(job)


async def main(args: argparse.Namespace) -> None:
    app = make_app(args.database_url, report=True)
    async with app.open_async():
        worker = asyncio.create_task(app.run_worker_async(
            name=args.name, concurrency=args.concurrency, listen_notify=True, wait=True,
            fetch_job_polling_interval=args.poll_interval,
            update_heartbeat_interval=args.heartbeat_interval,
            stalled_worker_timeout=args.stalled_after or 30.0,
            delete_jobs="never"))
        side = []
        if args.stalled_after:
            side.append(asyncio.create_task(
                retry_stalled_jobs(app, args.stalled_after, args.sweep_interval), name="retry-stalled"))
        try:
            await worker
        finally:
            for task in side:
                task.cancel()


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.procrastinate_child")
    parser.add_argument("--database-url", required=True)
    parser.add_argument("--name", required=True)
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--poll-interval", type=float, default=5.0, help="Procrastinate's default: 5 s")
    parser.add_argument("--heartbeat-interval", type=float, default=10.0,
                        help="Procrastinate's default: 10 s")
    parser.add_argument("--stalled-after", type=float, default=None,
                        help="run the stalled-job retry: jobs of workers silent this long")
    parser.add_argument("--sweep-interval", type=float, default=1.0)
    return parser.parse_args(argv)


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    asyncio.run(main(parse()))
