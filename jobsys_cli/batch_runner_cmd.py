"""`jobsys batch-runner`: run AI batch jobs (Gemini, or offline without a key)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
from collections.abc import Iterator
from typing import Any

from jobsys import config, migrations
from jobsys.batch.engine import EngineSettings
from jobsys.batch.facade import BatchJobs
from jobsys.batch.providers.gemini_env import ENV_API_KEY, ENV_BASE_URL
from jobsys.batch.providers.offline import DEFAULT_LATENCY_S
from jobsys.batch.providers.openai_env import ENV_API_KEY as ENV_OPENAI_KEY
from jobsys.batch.providers.openai_env import ENV_BASE_URL as ENV_OPENAI_URL
from jobsys.batch.providers.registry import ProviderSet
from jobsys.batch.runner import (
    HEARTBEAT_INTERVAL_S,
    MAX_JOBS,
    POLL_INTERVAL_S,
    BatchRunner,
    RunnerOptions,
    run_runner,
)
from jobsys.system import JobSystem
from jobsys_cli import process
from jobsys_cli.health_port import health_address, serve_health
from jobsys_cli.options import add_database_options


@contextlib.contextmanager
def batch_database(args: argparse.Namespace) -> Iterator[str]:
    """The database URL for a batch command; a brand-new embedded default is migrated first."""
    with config.database(args.database_url, args.data_dir) as db:
        if db.embedded:
            migrations.migrate(db.url)
        yield db.url


def _latency(text: str) -> tuple[float, float]:
    try:
        low, _, high = text.partition(",")
        return float(low), float(high or low)
    except ValueError:
        raise argparse.ArgumentTypeError("give MIN,MAX seconds, e.g. 0.2,0.8") from None


def _runner_options(args: argparse.Namespace) -> tuple[RunnerOptions, ProviderSet]:
    options = RunnerOptions(
        **({"name": args.name} if args.name else {}), max_jobs=args.max_jobs, rpm=args.rpm, tpm=args.tpm,
        shared_rate_limit=not args.per_runner_limit,
        push=not args.no_push, poll_interval_s=args.poll_interval, heartbeat_interval_s=args.heartbeat_interval,
        engine=EngineSettings(call_timeout_s=args.call_timeout))
    providers = ProviderSet.from_env(offline_only=args.provider == "offline", offline_latency_s=args.offline_latency)
    return options, providers


def cmd_batch_runner(args: argparse.Namespace) -> int:
    options, providers = _runner_options(args)

    async def main(url: str) -> None:
        stop = process.stop_on_signals()
        if args.health_port is None:
            await run_runner(url, stop, options, providers)
            return
        async with await JobSystem.connect(url, push=options.push) as jobs:
            runner = BatchRunner(BatchJobs.of(jobs), options, providers)
            task = asyncio.create_task(runner.run(stop), name="batch runner")
            health = asyncio.create_task(serve_health(args.health_port, runner.readiness, runner.metrics.exposition),
                                         name="health port")
            await process.until_stopped(stop, [health], graceful=[task])

    with batch_database(args) as url:
        asyncio.run(main(url))
    return 0


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError("give a whole number of at least 1")
    return value


def add_rate_options(parser: argparse.ArgumentParser) -> None:
    """--rpm / --tpm, for `jobsys batch-runner` and the runner `jobsys up` starts."""
    parser.add_argument("--rpm", type=_positive, default=None,
                        help="AI batches: requests per minute per model, counted over every runner (default: none)")
    parser.add_argument("--tpm", type=_positive, default=None,
                        help="AI batches: prompt tokens per minute per model, counted over every runner "
                             "(default: none)")


def add_parser(subparsers: Any) -> None:
    runner = subparsers.add_parser(
        "batch-runner", help="run AI batch jobs (Gemini, or offline without a key)",
        description=f"Claim AI batch jobs with a lease and run their items in a bounded pool with a shared "
                    f"rate limiter. Gemini when {ENV_API_KEY} is set ({ENV_BASE_URL} for a proxy), else the "
                    f"offline provider, whose outputs are labelled offline. {ENV_OPENAI_URL} (and optionally "
                    f"{ENV_OPENAI_KEY}) adds an OpenAI-compatible server for openai_compatible jobs. The runner "
                    f"claims only jobs it can run. SIGTERM/Ctrl-C hands unfinished jobs back.")
    add_database_options(runner, joinable=False)
    runner.add_argument("--name", default=None, help="runner name in logs and leases (default: host-pid)")
    runner.add_argument("--provider", choices=["auto", "offline"], default="auto",
                        help="what jobs asking for 'auto' get: auto = Gemini if a key is set, else offline")
    add_rate_options(runner)
    runner.add_argument("--per-runner-limit", action="store_true",
                        help="count --rpm / --tpm for this runner alone instead of across runners")
    runner.add_argument("--max-jobs", type=int, default=MAX_JOBS, help=f"jobs at once (default {MAX_JOBS})")
    runner.add_argument("--health-port", type=health_address, metavar="[HOST:]PORT",
                        help="serve GET /healthz, /readyz and /metrics there for a process supervisor (host "
                             "default 127.0.0.1); readyz is 503 naming the failing check: started, database, "
                             "push, auth")
    runner.add_argument("--call-timeout", type=float, default=EngineSettings().call_timeout_s, metavar="S",
                        help="per-call timeout in seconds (default %(default)g)")
    runner.add_argument("--offline-latency", type=_latency, default=DEFAULT_LATENCY_S, metavar="MIN,MAX",
                        help="simulated latency of the offline provider in seconds "
                             f"(default {DEFAULT_LATENCY_S[0]:g},{DEFAULT_LATENCY_S[1]:g})")
    runner.add_argument("--no-push", action="store_true", help="do not LISTEN; poll only")
    runner.add_argument("--poll-interval", type=float, default=POLL_INTERVAL_S, metavar="S",
                        help=f"claim poll while push is down (default {POLL_INTERVAL_S:g})")
    runner.add_argument("--heartbeat-interval", type=float, default=HEARTBEAT_INTERVAL_S, metavar="S",
                        help=f"lease renewal interval (default {HEARTBEAT_INTERVAL_S:g})")
    runner.set_defaults(handler=cmd_batch_runner)
