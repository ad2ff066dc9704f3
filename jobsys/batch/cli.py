"""CLI hooks for AI batches, added to `jobsys` by jobsys/cli.py:

    from jobsys.batch import cli as batch_cli
    batch_cli.add_commands(sub)                  # in build_parser(): `batch-runner`, `batch submit|export`
    asyncio.create_task(batch_cli.run_runner(jobs, stop))   # in `jobsys up`, beside the worker

Also runnable alone: `python -m jobsys.batch.cli batch-runner ...`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import pathlib
import signal
import sys
import time
import uuid
from typing import Any, TextIO

from jobsys import errors, migrations
from jobsys.batch import export
from jobsys.batch.engine import EngineSettings
from jobsys.batch.facade import BatchJobs
from jobsys.batch.models import (
    CONCURRENCY_DEFAULT,
    CONCURRENCY_MAX,
    DEFAULT_MODEL,
    MAX_RETRIES_DEFAULT,
    BatchCreate,
    BatchJob,
    BatchProgress,
    ProviderChoice,
)
from jobsys.batch.providers.gemini_env import ENV_API_KEY, ENV_BASE_URL
from jobsys.batch.providers.offline import DEFAULT_LATENCY_S
from jobsys.batch.providers.registry import ProviderSet
from jobsys.batch.runner import HEARTBEAT_INTERVAL_S, MAX_JOBS, POLL_INTERVAL_S, BatchRunner, RunnerOptions
from jobsys.config import ENV_DATABASE_URL, resolve_database
from jobsys.embedded import ENV_DATA_DIR
from jobsys.events import ChannelState, Event, EventName
from jobsys.system import JobSystem

log = logging.getLogger("jobsys.batch")

FOLLOW_POLL_S = 2.0  # progress poll while push is down
FOLLOW_SAFETY_POLL_S = 10.0  # while push is up
BAR_WIDTH = 30
NO_RUNNER_HINT_S = 10.0  # still pending after this long: say that a runner is needed


# Runner --------------------------------------------------------------------------------
async def run_runner(jobs_or_url: JobSystem | BatchJobs | str, stop: asyncio.Event,
                     options: RunnerOptions | None = None, providers: ProviderSet | None = None) -> None:
    """Run a batch runner until `stop` is set. Give a connected JobSystem to share its pool
    (as `jobsys up` does), or a database URL to open a connection of its own."""
    if isinstance(jobs_or_url, str):
        async with await JobSystem.connect(jobs_or_url, push=options.push if options else True) as jobs:
            await BatchRunner(BatchJobs.of(jobs), options, providers).run(stop)
        return
    batch = jobs_or_url if isinstance(jobs_or_url, BatchJobs) else BatchJobs.of(jobs_or_url)
    await BatchRunner(batch, options, providers).run(stop)


def _latency(text: str) -> tuple[float, float]:
    try:
        low, _, high = text.partition(",")
        return float(low), float(high or low)
    except ValueError:
        raise argparse.ArgumentTypeError("give MIN,MAX seconds, e.g. 0.2,0.8") from None


def _runner_options(args: argparse.Namespace) -> tuple[RunnerOptions, ProviderSet]:
    options = RunnerOptions(
        **({"name": args.name} if args.name else {}), max_jobs=args.max_jobs, rpm=args.rpm, tpm=args.tpm,
        push=not args.no_push, poll_interval_s=args.poll_interval, heartbeat_interval_s=args.heartbeat_interval,
        engine=EngineSettings(call_timeout_s=args.call_timeout))
    providers = ProviderSet.from_env(offline_only=args.provider == "offline", offline_latency_s=args.offline_latency)
    return options, providers


def _stop_event() -> asyncio.Event:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    return stop


def _database(args: argparse.Namespace) -> tuple[str, Any]:
    url, embedded = resolve_database(args.database_url, args.data_dir)
    if embedded is not None:
        migrations.migrate(url)  # the embedded default may be brand new
    return url, embedded


def cmd_batch_runner(args: argparse.Namespace) -> int:
    options, providers = _runner_options(args)
    url, embedded = _database(args)

    async def main() -> None:
        stop = _stop_event()
        await run_runner(url, stop, options, providers)

    try:
        asyncio.run(main())
    finally:
        if embedded is not None:
            embedded.stop()
    return 0


# Submit and follow ------------------------------------------------------------------------
def read_items(path: pathlib.Path) -> list[dict[str, Any]]:
    """JSONL: one object per line (a bare string becomes {"text": ...}); blank lines skipped."""
    items: list[dict[str, Any]] = []
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                value = json.loads(line)
            except json.JSONDecodeError as exc:
                raise errors.InvalidInput(f"{path}:{number}: not JSON ({exc.msg})") from None
            if isinstance(value, str):
                value = {"text": value}
            if not isinstance(value, dict):
                raise errors.InvalidInput(f"{path}:{number}: each line must be a JSON object or a string")
            items.append(value)
    return items


def _template(value: str) -> str:
    """--template TEXT, or --template @FILE to read it from a file."""
    if value.startswith("@"):
        return pathlib.Path(value[1:]).read_text(encoding="utf-8")
    return value


class ProgressBar:
    """A one-line bar redrawn in place on a terminal; one line per change (at most one a
    second) when the output is a file or pipe."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.tty = out.isatty()
        self._last_line = ""
        self._last_print_s = 0.0
        self._started_s = time.monotonic()

    def show(self, p: BatchProgress | BatchJob, final: bool = False) -> None:
        done = p.completed_items + p.failed_items
        filled = BAR_WIDTH * done // max(1, p.total_items)
        line = (f"[{'#' * filled}{'.' * (BAR_WIDTH - filled)}] {done}/{p.total_items} ({p.progress_percent}%) "
                f"ok {p.completed_items} failed {p.failed_items} running {p.running_items} "
                f"{p.status.value}{' OFFLINE' if p.offline else ''} {time.monotonic() - self._started_s:.0f}s")
        if self.tty:
            self.out.write("\r" + line.ljust(len(self._last_line)) + ("\n" if final else ""))
            self.out.flush()
            self._last_line = line
        elif line != self._last_line and (final or time.monotonic() - self._last_print_s >= 1.0):
            self.out.write(line + "\n")
            self.out.flush()
            self._last_print_s = time.monotonic()
            self._last_line = line


async def follow(batch: BatchJobs, job_id: uuid.UUID, out: TextIO = sys.stderr) -> BatchJob:
    """Show the job's progress until it ends: live from background_job_progress events,
    a poll every 2 s while the push channel is down."""
    bar = ProgressBar(out)
    wake = asyncio.Event()
    push = {"state": ChannelState.DISCONNECTED}

    def on_event(event: Event) -> None:
        if event.event != EventName.BACKGROUND_JOB_PROGRESS or event.payload.get("job_id") != str(job_id):
            return
        progress = BatchProgress.model_validate(event.payload)
        bar.show(progress)
        if progress.status.final:
            wake.set()

    def on_state(state: ChannelState) -> None:
        push["state"] = state
        wake.set()  # resync with a read

    subscription = await batch.subscribe_progress(on_event, on_state)
    started_s = time.monotonic()
    hinted = False
    try:
        job = await batch.get_job(job_id)
        while True:
            bar.show(job, final=job.status.final)
            if job.status.final:
                return job
            if not hinted and job.status.value == "pending" and time.monotonic() - started_s > NO_RUNNER_HINT_S:
                out.write("\nstill pending: is a batch runner running? (`jobsys up` or `jobsys batch-runner`)\n")
                hinted = True
            interval_s = FOLLOW_SAFETY_POLL_S if push["state"] is ChannelState.SUBSCRIBED else FOLLOW_POLL_S
            try:
                async with asyncio.timeout(interval_s):  # not wait_for: it can swallow a cancel on 3.11
                    await wake.wait()
            except TimeoutError:
                pass
            wake.clear()
            job = await batch.get_job(job_id)
    finally:
        await subscription.close()


def cmd_batch_submit(args: argparse.Namespace) -> int:
    if not getattr(args, "verbose", False):
        logging.getLogger("jobsys").setLevel(logging.WARNING)  # info lines would break the progress bar
    try:
        spec = BatchCreate.model_validate({
            "template": _template(args.template), "items": read_items(args.file), "model": args.model,
            "title": args.title, "system_instruction": args.system, "temperature": args.temperature,
            "max_output_tokens": args.max_output_tokens, "concurrency": args.concurrency,
            "max_retries": args.max_retries, "provider": args.provider})
    except errors.InvalidInput as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 2
    except (OSError, ValueError) as exc:  # pydantic's ValidationError is a ValueError
        print(f"error: {exc}", file=sys.stderr)
        return 2
    url, embedded = _database(args)

    async def main() -> int:
        async with await JobSystem.connect(url) as jobs:
            batch = BatchJobs.of(jobs)
            job = await batch.create_job(spec)
            print(f"submitted {job.id}: {job.total_items} items, model {job.payload.model}, "
                  f"concurrency {job.concurrency}", flush=True)
            if args.no_follow:
                return 0
            final = await follow(batch, job.id)
            print(f"{final.status.value}: {final.completed_items} completed, {final.failed_items} failed, "
                  f"{final.cancelled_items} cancelled" + (" (offline provider: placeholder drafts)" if final.offline
                                                          else ""), flush=True)
            return 0 if final.status.value == "completed" and final.failed_items == 0 else 1

    try:
        return asyncio.run(main())
    except errors.JobsysError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 2
    finally:
        if embedded is not None:
            embedded.stop()


def cmd_batch_export(args: argparse.Namespace) -> int:
    url, embedded = _database(args)

    async def main() -> str:
        async with await JobSystem.connect(url, push=False) as jobs:
            batch = BatchJobs.of(jobs)
            if args.format == "csv":
                return await export.export_csv(batch, args.job_id)
            return await export.export_jsonl(batch, args.job_id)

    try:
        text = asyncio.run(main())
    except errors.JobsysError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 2
    finally:
        if embedded is not None:
            embedded.stop()
    if args.output:
        pathlib.Path(args.output).write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)
    return 0


# Parser ----------------------------------------------------------------------------------
def _add_database_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--database-url", help=f"Postgres URL (default: ${ENV_DATABASE_URL}, else embedded)")
    parser.add_argument("--data-dir", type=pathlib.Path,
                        help=f"embedded Postgres data directory (default: ${ENV_DATA_DIR} or the user data dir)")


def add_commands(subparsers: Any) -> None:
    """Add `batch-runner` and `batch submit|export` to the `jobsys` parser's subparsers."""
    runner = subparsers.add_parser(
        "batch-runner", help="run AI batch jobs (Gemini, or offline without a key)",
        description=f"Claim AI batch jobs with a lease and run their items in a bounded pool with a shared "
                    f"rate limiter. Gemini when {ENV_API_KEY} is set ({ENV_BASE_URL} for a proxy), else the "
                    f"offline provider, whose outputs are labelled offline. SIGTERM/Ctrl-C hands unfinished "
                    f"jobs back.")
    _add_database_options(runner)
    runner.add_argument("--name", default=None, help="runner name in logs and leases (default: host-pid)")
    runner.add_argument("--provider", choices=["auto", "offline"], default="auto",
                        help="what jobs asking for 'auto' get: auto = Gemini if a key is set, else offline")
    runner.add_argument("--rpm", type=int, default=None, help="requests per minute over all jobs (default: none)")
    runner.add_argument("--tpm", type=int, default=None, help="prompt tokens per minute (default: none)")
    runner.add_argument("--max-jobs", type=int, default=MAX_JOBS, help=f"jobs at once (default {MAX_JOBS})")
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

    batch = subparsers.add_parser("batch", help="submit AI batch jobs and export their results")
    batch_sub = batch.add_subparsers(dest="batch_command", required=True)
    submit = batch_sub.add_parser(
        "submit", help="submit FILE.jsonl as one AI batch job and follow its progress",
        description="Each line of FILE is one item: a JSON object whose fields fill the template's {placeholders} "
                    "(a bare JSON string becomes {\"text\": ...}). Exit 0 when every item completed.")
    submit.add_argument("file", type=pathlib.Path, metavar="FILE.jsonl")
    submit.add_argument("--template", required=True, help="prompt template with {field} placeholders, or @FILE")
    submit.add_argument("--model", default=DEFAULT_MODEL, help=f"default {DEFAULT_MODEL}")
    submit.add_argument("--concurrency", type=int, default=CONCURRENCY_DEFAULT,
                        help=f"parallel calls, 1..{CONCURRENCY_MAX} (default {CONCURRENCY_DEFAULT})")
    submit.add_argument("--title", default=None)
    submit.add_argument("--system", default=None, help="system instruction")
    submit.add_argument("--temperature", type=float, default=None)
    submit.add_argument("--max-output-tokens", type=int, default=None)
    submit.add_argument("--max-retries", type=int, default=MAX_RETRIES_DEFAULT,
                        help=f"retries per item after transient errors (default {MAX_RETRIES_DEFAULT})")
    submit.add_argument("--provider", choices=[p.value for p in ProviderChoice], default="auto")
    submit.add_argument("--no-follow", action="store_true", help="print the job id and exit")
    _add_database_options(submit)
    submit.set_defaults(handler=cmd_batch_submit)

    export_cmd = batch_sub.add_parser("export", help="write a job's items and outputs as JSONL or CSV")
    export_cmd.add_argument("job_id")
    export_cmd.add_argument("--format", choices=["jsonl", "csv"], default="jsonl")
    export_cmd.add_argument("-o", "--output", help="file to write (default: stdout)")
    _add_database_options(export_cmd)
    export_cmd.set_defaults(handler=cmd_batch_export)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="jobsys", description="AI batch commands")
    parser.add_argument("-v", "--verbose", action="store_true")
    add_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s %(message)s")
    if not args.verbose:
        for noisy in ("pgserver", "psycopg.pool", "httpx", "google_genai"):
            logging.getLogger(noisy).setLevel(logging.WARNING)
    return int(args.handler(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
