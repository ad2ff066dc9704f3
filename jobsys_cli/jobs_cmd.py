"""`jobsys jobs create|list|show|pause|resume|cancel|retry|clone|delete|export`: device jobs
from the shell.

Every read takes --json (one JSON document on stdout, nothing else there). Refusals are one
line on stderr: exit 2 for bad input (nothing is stored), 1 for an unknown id or a move the
job's state does not allow. A job id may be given as an unambiguous prefix (4+ hex digits)."""

from __future__ import annotations

import argparse
import asyncio
import pathlib
import re
import signal
import sys
import uuid
from typing import Any

from jobsys import errors, export
from jobsys.models import (
    DEVICE_COUNT_MAX,
    DURATION_MAX_SEC,
    PRIORITY_MAX,
    PRIORITY_MIN,
    TIMEOUT_MAX_SEC,
    TOPUP_GRACE_MAX_SEC,
    Job,
    JobCreate,
    JobDetail,
    JobRunRow,
    JobStatus,
)
from jobsys.system import JobSystem
from jobsys_cli import job_follow
from jobsys_cli.operator import (
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    BadInput,
    error_exit,
    print_json,
    run_with_jobs,
    say,
    table,
    when,
)
from jobsys_cli.options import add_database_options

ID_PREFIX_MIN = 4
ID_PREFIX_CHARS = 8  # ids in tables
TITLE_COLUMN_CHARS = 40
PAGE = 1000  # list_jobs' largest page, for resolving a prefix
# Job fields newer libraries add; shown by `jobs show` when the job has them.
EXTRA_FIELDS = ("end_reason", "waiting_for_devices", "waiting_since", "timeout_sec", "topup_grace_sec",
                "start_at", "priority", "ended_at")


# Input ------------------------------------------------------------------------------------
def _check_range(value: int | None, low: int, high: int, message: str) -> None:
    if value is not None and not low <= value <= high:
        raise BadInput(message)


def create_spec(args: argparse.Namespace) -> JobCreate:
    """The job the flags ask for, checked before anything is sent (BadInput or ValidationError)."""
    _check_range(args.duration, 1, DURATION_MAX_SEC, f"duration must be 1..{DURATION_MAX_SEC} seconds")
    _check_range(args.percent, 1, 100, "percent must be 1..100")
    _check_range(args.count, 1, DEVICE_COUNT_MAX, f"count must be 1..{DEVICE_COUNT_MAX} devices")
    _check_range(args.timeout, 1, TIMEOUT_MAX_SEC, f"timeout must be 1..{TIMEOUT_MAX_SEC} seconds")
    _check_range(args.topup_grace, 0, TOPUP_GRACE_MAX_SEC, f"topup grace must be 0..{TOPUP_GRACE_MAX_SEC} seconds")
    _check_range(args.priority, PRIORITY_MIN, PRIORITY_MAX, f"priority must be {PRIORITY_MIN}..{PRIORITY_MAX}")
    fields: dict[str, Any] = {"target_url": args.url, "duration_sec": args.duration, "title": args.title}
    if args.percent is not None:
        fields.update(target_type="percentage", target_value=args.percent)
    elif args.count is not None:
        fields.update(target_type="device_count", target_value=args.count)
    else:
        fields.update(target_type="all_devices")
    if args.timeout is not None:
        fields["timeout_sec"] = args.timeout
    if args.topup_grace is not None:
        fields["topup_grace_sec"] = args.topup_grace
    if args.start_at is not None:
        fields["start_at"] = args.start_at
    if args.priority is not None:
        fields["priority"] = args.priority
    if args.label:
        fields["device_labels"] = label_pairs(args.label)
    return JobCreate.model_validate(fields)


def label_pairs(items: list[str]) -> dict[str, str]:
    """`key=value` arguments as a label object (BadInput for one without `=`)."""
    pairs: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise BadInput(f"label {item!r}: give key=value, e.g. rack=A")
        pairs[key] = value
    return pairs


async def resolve_job_id(jobs: JobSystem, text: str) -> uuid.UUID:
    """A full job id, or the one job whose id starts with `text` (at least 4 hex digits)."""
    text = text.strip().lower()
    try:
        return uuid.UUID(text)
    except ValueError:
        pass
    if not re.fullmatch(r"[0-9a-f][0-9a-f-]*", text) or len(text.replace("-", "")) < ID_PREFIX_MIN:
        raise BadInput(f"not a job id: {text[:60]!r} (give the id, or its first {ID_PREFIX_MIN}+ characters)")
    matches: list[uuid.UUID] = []
    offset = 0
    while True:
        page = await jobs.list_jobs(limit=PAGE, offset=offset)
        matches += [job.id for job in page.jobs if str(job.id).startswith(text)]
        if len(page.jobs) < PAGE:
            break
        offset += PAGE
    if not matches:
        raise errors.NotFound(f"job not found: {text}")
    if len(matches) > 1:
        raise BadInput(f"job id prefix {text} is ambiguous ({len(matches)} jobs); give more characters")
    return matches[0]


# Output -----------------------------------------------------------------------------------
def progress(job: Job) -> str:
    return f"{job.completed_count}/{job.target_count} ({job.progress_percent}%)"


def status_text(job: Job | dict[str, Any]) -> str:
    data = job.model_dump(mode="json") if isinstance(job, Job) else job
    status = str(data.get("status"))
    if data.get("end_reason"):
        status += f" ({data['end_reason']})"
    elif data.get("waiting_for_devices"):
        status += f" (waiting for {data['waiting_for_devices']} devices)"
    return status


def short(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def jobs_table(job_list: list[Job]) -> str:
    rows = [[str(job.id)[:ID_PREFIX_CHARS], status_text(job), progress(job),
             f"run {job.running_count} failed {job.failed_count}", when(job.created_at),
             short(job.title, TITLE_COLUMN_CHARS)] for job in job_list]
    return table(["ID", "STATUS", "PROGRESS", "RUNS", "CREATED", "TITLE"], rows)


def job_text(detail: JobDetail) -> str:
    data = detail.model_dump(mode="json")
    target = detail.target_type.value + ("" if detail.target_value is None else f" {detail.target_value}")
    fields: list[tuple[str, Any]] = [
        ("job", detail.id), ("title", detail.title), ("url", detail.target_url), ("status", status_text(detail)),
        ("progress", job_follow.progress_text(detail)),
        ("target", f"{target} -> {detail.target_count} devices; {detail.duration_sec} s each"),
        ("counts", f"assigned {detail.assigned_count}, running {detail.running_count}, completed "
                   f"{detail.completed_count}, failed {detail.failed_count}, cancelled {detail.cancelled_count}"),
        ("created", when(detail.created_at)),
    ]
    ended = detail.ended_at or detail.finished_at
    if ended is not None:
        fields.append(("ended", when(ended)))
    for key in EXTRA_FIELDS:
        if data.get(key) is not None and key != "ended_at":
            value = when(data[key]) if key.endswith(("_at", "_since")) else data[key]
            fields.append((key.replace("_", " "), value))
    width = max(len(label) for label, _ in fields) + 2
    lines = [f"{label:<{width}}{value}" for label, value in fields]
    lines.append("")
    if not detail.assignments:
        lines.append("no device runs")
    else:
        rows = [[a.serial, a.worker_name or "-", a.status.value, str(a.attempt), when(a.started_at),
                 when(a.finished_at), short(" ".join((a.error or "").split()), 60) or "-"]
                for a in detail.assignments]
        lines.append(table(["DEVICE", "WORKER", "STATUS", "ATTEMPT", "STARTED", "FINISHED", "ERROR"], rows))
    return "\n".join(lines)


def ended_text(job: Job) -> str:
    return (f"{status_text(job)}: {job.completed_count}/{job.target_count} devices completed, "
            f"{job.failed_count} failed, {job.cancelled_count} cancelled")


# Commands ---------------------------------------------------------------------------------
def cancel_hint(args: argparse.Namespace, job_id: uuid.UUID) -> str:
    where = ""
    if args.data_dir:
        where = f" --data-dir {args.data_dir}"
    elif args.database_url:
        where = " (with the same --database-url)"
    return (f"stopped following; job {job_id} keeps running. "
            f"Cancel it with: jobsys jobs cancel {job_id}{where}")


def cmd_create(args: argparse.Namespace) -> int:
    try:
        spec = create_spec(args)
    except Exception as exc:  # noqa: BLE001 - BadInput / ValidationError: one line, exit 2
        return error_exit(exc)
    created_id: list[uuid.UUID] = []

    async def body(jobs: JobSystem) -> int:
        interrupted = asyncio.Event()
        if args.wait:  # before the job exists, so a Ctrl-C at once is still told what happened
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, interrupted.set)
        created = await jobs.create_job(spec)
        job_id = created.job.id
        created_id.append(job_id)
        if not args.json:
            print(f"created job {job_id}: {created.assigned} devices assigned "
                  f"(target {created.job.target_count})", flush=True)
        if not args.wait:
            if args.json:
                print_json(created.model_dump(mode="json"))
            return EXIT_OK
        try:
            final = await job_follow.follow(jobs, job_id, sys.stderr, interrupted)
        except errors.NotFound:
            say(f"job {job_id} was deleted while it ran")
            return EXIT_FAILED
        if final is None:
            say(cancel_hint(args, job_id))
            if args.json:
                print_json({"job": (await jobs.get_job(job_id)).model_dump(mode="json"),
                            "assigned": created.assigned})
            return EXIT_INTERRUPTED
        if args.json:
            print_json({"job": final.model_dump(mode="json"), "assigned": created.assigned})
        else:
            print(ended_text(final), flush=True)
        return EXIT_OK if job_follow.status_of(final) == "completed" else EXIT_FAILED

    try:
        return run_with_jobs(args, body, push=args.wait)
    except KeyboardInterrupt:  # before the handler was installed (database start, connect)
        if created_id:
            say(cancel_hint(args, created_id[0]))
        else:
            say("interrupted")
        return EXIT_INTERRUPTED


def cmd_list(args: argparse.Namespace) -> int:
    statuses = [s.value for s in JobStatus]
    if args.status is not None and args.status not in statuses:
        return error_exit(BadInput(f"status must be one of {', '.join(statuses)}"))
    if not 1 <= args.limit <= PAGE:
        return error_exit(BadInput(f"limit must be 1..{PAGE}"))

    async def body(jobs: JobSystem) -> int:
        listed = await jobs.list_jobs(status=args.status, q=args.q, limit=args.limit)
        if args.json:
            print_json(listed.model_dump(mode="json"))
            return EXIT_OK
        if listed.jobs:
            print(jobs_table(listed.jobs))
        else:
            print("no jobs" + (" match" if args.status or args.q else ""))
        summary = listed.summary.model_dump(mode="json")
        total = summary.pop("total", 0)
        counts = ", ".join(f"{value} {key.replace('_', ' ')}" for key, value in summary.items())
        print(f"\n{total} job{'' if total == 1 else 's'} in all: {counts}")
        return EXIT_OK

    return run_with_jobs(args, body)


def cmd_show(args: argparse.Namespace) -> int:
    async def body(jobs: JobSystem) -> int:
        detail = await jobs.get_job(await resolve_job_id(jobs, args.job_id))
        if args.json:
            print_json(detail.model_dump(mode="json"))
        else:
            print(job_text(detail))
        return EXIT_OK

    return run_with_jobs(args, body)


def _transition(verb: str, past: str) -> Any:
    def cmd(args: argparse.Namespace) -> int:
        async def body(jobs: JobSystem) -> int:
            job_id = await resolve_job_id(jobs, args.job_id)
            job = await getattr(jobs, f"{verb}_job")(job_id)
            if args.json:
                print_json(job.model_dump(mode="json"))
            else:
                print(f"{past} job {job.id}: {status_text(job)}, {progress(job)}")
            return EXIT_OK

        return run_with_jobs(args, body)

    return cmd


def cmd_delete(args: argparse.Namespace) -> int:
    async def body(jobs: JobSystem) -> int:
        job_id = await resolve_job_id(jobs, args.job_id)
        await jobs.delete_job(job_id)
        if args.json:
            print_json({"deleted": str(job_id)})
        else:
            print(f"deleted job {job_id} and its device runs")
        return EXIT_OK

    return run_with_jobs(args, body)


def cmd_retry(args: argparse.Namespace) -> int:
    async def body(jobs: JobSystem) -> int:
        retried = await jobs.retry_job(await resolve_job_id(jobs, args.job_id))
        if args.json:
            print_json(retried.model_dump(mode="json"))
        else:
            print(f"retried {retried.retried} failed runs of job {retried.job.id}: {status_text(retried.job)}, "
                  f"{progress(retried.job)}")
        return EXIT_OK

    return run_with_jobs(args, body)


def cmd_clone(args: argparse.Namespace) -> int:
    async def body(jobs: JobSystem) -> int:
        created = await jobs.clone_job(await resolve_job_id(jobs, args.job_id))
        if args.json:
            print_json(created.model_dump(mode="json"))
        else:
            print(f"created job {created.job.id}: {created.assigned} devices assigned "
                  f"(target {created.job.target_count})")
        return EXIT_OK

    return run_with_jobs(args, body)


def export_text(rows: list[JobRunRow], fmt: str) -> str:
    """One line (JSONL) or row (CSV, no byte-order mark: it goes to a pipe or a file) per device run."""
    return export.job_runs_jsonl(rows) if fmt == "jsonl" else export.job_runs_csv(rows, bom=False)


def cmd_export(args: argparse.Namespace) -> int:
    texts: list[str] = []

    async def body(jobs: JobSystem) -> int:
        texts.append(export_text(await jobs.export_job_runs(await resolve_job_id(jobs, args.job_id)), args.format))
        return EXIT_OK

    code = run_with_jobs(args, body)
    if code != EXIT_OK:
        return code
    if args.output:
        try:
            pathlib.Path(args.output).write_text(texts[0], encoding="utf-8")
        except OSError as exc:
            say(f"cannot write {args.output}: {exc.strerror or exc}")
            return EXIT_FAILED
    else:
        sys.stdout.write(texts[0])
        sys.stdout.flush()
    return EXIT_OK


# Parser -----------------------------------------------------------------------------------
def _add_common(parser: argparse.ArgumentParser, json_help: str = "print JSON (one document) instead of text") -> None:
    parser.add_argument("--json", action="store_true", help=json_help)
    add_database_options(parser)


def add_parser(subparsers: Any) -> None:
    jobs = subparsers.add_parser(
        "jobs", help="create, list, show and control device jobs",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = jobs.add_subparsers(dest="jobs_command", required=True)

    create = sub.add_parser(
        "create", help="create a device job: open URL on all / P%% / N devices for SEC seconds",
        description="Store the job and assign it to devices now; prints its id and how many devices were "
                    "assigned. --wait follows it with a progress bar until it ends (exit 0 when it "
                    "completed, 1 when it ended otherwise, 130 on Ctrl-C: the job keeps running).")
    create.add_argument("--url", required=True, help="http(s) URL to open on each device")
    create.add_argument("--duration", type=int, required=True, metavar="SEC",
                        help=f"seconds each device keeps it in front (1..{DURATION_MAX_SEC})")
    target = create.add_mutually_exclusive_group(required=True)
    target.add_argument("--all", action="store_true", help="every healthy connected device")
    target.add_argument("--percent", type=int, metavar="P", help="P%% of the healthy devices (1..100)")
    target.add_argument("--count", type=int, metavar="N", help=f"N devices (1..{DEVICE_COUNT_MAX})")
    create.add_argument("--title", default=None, help="default: host and path of the URL")
    create.add_argument("--timeout", type=int, default=None, metavar="SEC",
                        help=f"end the job after SEC seconds, met or not (1..{TIMEOUT_MAX_SEC})")
    create.add_argument("--topup-grace", type=int, default=None, metavar="SEC",
                        help="when its runs have all ended short, wait this long for new devices before ending "
                             f"incomplete (0..{TOPUP_GRACE_MAX_SEC}; default: the topup_grace_sec setting)")
    create.add_argument("--start-at", default=None, metavar="TIME",
                        help="start later: an RFC 3339 time with its zone, e.g. 2026-12-24T09:00:00+09:00 "
                             "(the job is scheduled until then)")
    create.add_argument("--label", action="append", default=[], metavar="KEY=VALUE",
                        help="only devices carrying this label run it (repeat: all of them); --percent and "
                             "--count count among those")
    create.add_argument("--priority", type=int, default=None, metavar="P",
                        help=f"{PRIORITY_MIN}..{PRIORITY_MAX}, default 0: a device runs the highest-priority job "
                             "it has first, then the oldest")
    create.add_argument("--wait", action="store_true", help="follow the job with a progress bar until it ends")
    _add_common(create, "print JSON (the created job; with --wait, the job as it ended)")
    create.set_defaults(handler=cmd_create)

    listing = sub.add_parser("list", help="jobs, newest first, with progress")
    listing.add_argument("--status", default=None, help=", ".join(s.value for s in JobStatus))
    listing.add_argument("--q", default=None, metavar="TEXT", help="search title and URL")
    listing.add_argument("--limit", type=int, default=100, help=f"at most this many (1..{PAGE}, default 100)")
    _add_common(listing)
    listing.set_defaults(handler=cmd_list)

    show = sub.add_parser("show", help="one job and its per-device runs")
    show.add_argument("job_id", metavar="ID")
    _add_common(show)
    show.set_defaults(handler=cmd_show)

    for verb, past, text in (("pause", "paused", "pause a job: queued runs wait, running ones finish"),
                             ("resume", "resumed", "resume a paused job"),
                             ("cancel", "cancelled", "cancel a job, keeping its history; running runs are stopped")):
        command = sub.add_parser(verb, help=text)
        command.add_argument("job_id", metavar="ID")
        _add_common(command, "print the job as JSON")
        command.set_defaults(handler=_transition(verb, past))

    retry = sub.add_parser("retry", help="put a job's failed runs back in the queue (re-opens an incomplete job)")
    retry.add_argument("job_id", metavar="ID")
    _add_common(retry, "print the job and the number of runs retried as JSON")
    retry.set_defaults(handler=cmd_retry)

    clone = sub.add_parser("clone", help="a new job with the same settings, assigned now")
    clone.add_argument("job_id", metavar="ID")
    _add_common(clone, "print the new job as JSON")
    clone.set_defaults(handler=cmd_clone)

    export = sub.add_parser("export", help="one row per device run, as CSV or JSON Lines")
    export.add_argument("job_id", metavar="ID")
    export.add_argument("--format", choices=["csv", "jsonl"], default="csv", help="default csv")
    export.add_argument("-o", "--output", metavar="FILE", help="file to write (default: stdout)")
    add_database_options(export)
    export.set_defaults(handler=cmd_export)

    delete = sub.add_parser("delete", help="delete a job and its device runs (running ones are stopped)")
    delete.add_argument("job_id", metavar="ID")
    _add_common(delete, "print {\"deleted\": ID}")
    delete.set_defaults(handler=cmd_delete)

