"""`jobsys batch submit|export`: submit a JSONL file as one AI batch job and follow it;
write a job's items and outputs as JSONL or CSV."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import pathlib
import sys
from typing import Any

from jobsys import errors
from jobsys.batch import export
from jobsys.batch.facade import BatchJobs
from jobsys.batch.models import (
    CONCURRENCY_DEFAULT,
    CONCURRENCY_MAX,
    DEFAULT_MODEL,
    MAX_RETRIES_DEFAULT,
    BatchCreate,
    BatchJob,
    BatchMode,
    ProviderChoice,
)
from jobsys.system import JobSystem
from jobsys_cli.batch_follow import follow
from jobsys_cli.batch_runner_cmd import batch_database
from jobsys_cli.options import add_database_options


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


def _response_schema(value: str | None) -> dict[str, Any] | None:
    """--response-schema JSON, or @FILE to read it from a file."""
    if value is None:
        return None
    text = pathlib.Path(value[1:]).read_text(encoding="utf-8") if value.startswith("@") else value
    try:
        schema = json.loads(text)
    except json.JSONDecodeError as exc:
        raise errors.InvalidInput(f"--response-schema: not JSON ({exc.msg})") from None
    if not isinstance(schema, dict):
        raise errors.InvalidInput("--response-schema must be a JSON object (a JSON Schema)")
    return schema


def _usage_line(job: BatchJob) -> str:
    """Tokens over every attempt, the retries' share, and the price table's estimate."""
    usage, cost = job.usage, job.cost
    line = (f"tokens: {usage.total:,} (input {usage.input:,}, output {usage.output:,}, thinking {usage.thinking:,}; "
            f"retries and failed attempts {usage.retry_total:,})")
    if cost.usd is not None:
        line += f"; estimated cost ${cost.usd:,.4f} (prices of {cost.prices_as_of})"
    return line


def cmd_batch_submit(args: argparse.Namespace) -> int:
    if not getattr(args, "verbose", False):
        logging.getLogger("jobsys").setLevel(logging.WARNING)  # info lines would break the progress bar
    try:
        spec = BatchCreate.model_validate({
            "template": _template(args.template), "items": read_items(args.file), "model": args.model,
            "title": args.title, "system_instruction": args.system, "temperature": args.temperature,
            "max_output_tokens": args.max_output_tokens, "concurrency": args.concurrency,
            "max_retries": args.max_retries, "provider": args.provider,
            "response_schema": _response_schema(args.response_schema), "mode": args.mode})
    except errors.InvalidInput as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 2
    except (OSError, ValueError) as exc:  # pydantic's ValidationError is a ValueError
        print(f"error: {exc}", file=sys.stderr)
        return 2

    async def main(url: str) -> int:
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
            if final.usage.total:
                print(_usage_line(final), flush=True)
            return 0 if final.status.value == "completed" and final.failed_items == 0 else 1

    with batch_database(args) as url:
        try:
            return asyncio.run(main(url))
        except errors.JobsysError as exc:
            print(f"error: {exc.message}", file=sys.stderr)
            return 2


def cmd_batch_export(args: argparse.Namespace) -> int:
    async def main(url: str) -> str:
        async with await JobSystem.connect(url, push=False) as jobs:
            batch = BatchJobs.of(jobs)
            if args.format == "csv":
                return await export.export_csv(batch, args.job_id)
            return await export.export_jsonl(batch, args.job_id)

    with batch_database(args) as url:
        try:
            text = asyncio.run(main(url))
        except errors.JobsysError as exc:
            print(f"error: {exc.message}", file=sys.stderr)
            return 2
    if args.output:
        pathlib.Path(args.output).write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)
    return 0


def add_parser(subparsers: Any) -> None:
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
    submit.add_argument("--provider", choices=[p.value for p in ProviderChoice], default="auto",
                        help="openai_compatible: the runner's JOBSYS_OPENAI_BASE_URL server (vLLM, Ollama, ...)")
    submit.add_argument("--response-schema", default=None, metavar="JSON|@FILE",
                        help="JSON Schema every output must match (structured output), or @FILE")
    submit.add_argument("--mode", choices=[m.value for m in BatchMode], default="standard",
                        help="batch_api: one Gemini Batch API job, half price, results within 24 h "
                             "(needs --provider gemini)")
    submit.add_argument("--no-follow", action="store_true", help="print the job id and exit")
    add_database_options(submit, joinable=False)
    submit.set_defaults(handler=cmd_batch_submit)

    export_cmd = batch_sub.add_parser("export", help="write a job's items and outputs as JSONL or CSV")
    export_cmd.add_argument("job_id")
    export_cmd.add_argument("--format", choices=["jsonl", "csv"], default="jsonl")
    export_cmd.add_argument("-o", "--output", help="file to write (default: stdout)")
    add_database_options(export_cmd, joinable=False)
    export_cmd.set_defaults(handler=cmd_batch_export)
