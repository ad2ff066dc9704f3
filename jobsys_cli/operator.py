"""What the operator commands (`jobsys jobs ...`, `jobsys devices ...`) share: the database
(joined, or the embedded default started and migrated), one JobSystem for the call, and
refusals as one line on stderr: `jobsys: <message>`, exit 2 for bad input, 1 for an unknown
id, an illegal move or an unreachable database. No tracebacks, no pydantic dumps."""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import logging
import sys
from typing import Any, Awaitable, Callable

import pydantic

from jobsys import errors
from jobsys.system import JobSystem
from jobsys_cli.batch_runner_cmd import batch_database

EXIT_OK = 0
EXIT_FAILED = 1  # not found, illegal transition, unreachable database, a job that ended short
EXIT_BAD_INPUT = 2
EXIT_INTERRUPTED = 130

# Command-line names of the library's fields, so a message names what the operator typed.
FLAG_NAMES = {"target_url": "--url", "duration_sec": "--duration", "title": "--title", "timeout_sec": "--timeout",
              "job_id": "job id", "status": "--status"}


class BadInput(Exception):
    """Refused before anything is sent: one line, exit 2."""


def say(message: str) -> None:
    print(f"jobsys: {message}", file=sys.stderr, flush=True)


def one_line(text: str) -> str:
    return " ".join(str(text).split())


def validation_message(exc: pydantic.ValidationError) -> str:
    """The first problem as `--flag: what is wrong` (pydantic's own prefixes dropped)."""
    parts = []
    for error in exc.errors(include_url=False):
        field = ".".join(str(part) for part in error.get("loc", ()))
        message = str(error.get("msg", "invalid value"))
        for prefix in ("Value error, ", "Assertion failed, "):
            if message.startswith(prefix):
                message = message[len(prefix):]
        name = FLAG_NAMES.get(field, field)
        parts.append(f"{name}: {message}" if name else message)
    return one_line("; ".join(parts) or "invalid input")


def error_exit(exc: BaseException) -> int:
    """Say what went wrong in one line; the exit code for it."""
    if isinstance(exc, BadInput):
        say(one_line(str(exc)))
        return EXIT_BAD_INPUT
    if isinstance(exc, pydantic.ValidationError):
        say(validation_message(exc))
        return EXIT_BAD_INPUT
    if isinstance(exc, errors.InvalidInput):
        field = exc.details.get("field") if isinstance(exc.details, dict) else None
        message = one_line(exc.message)
        name = FLAG_NAMES.get(str(field)) if field else None
        say(f"{name}: {message}" if name and name.startswith("--") and not message.startswith(name) else message)
        return EXIT_BAD_INPUT
    if isinstance(exc, errors.JobsysError):  # NotFound, IllegalTransition, Forbidden, TransportError...
        say(one_line(exc.message))
        return EXIT_FAILED
    say(one_line(f"{type(exc).__name__}: {exc}"))
    return EXIT_FAILED


def quiet_library_logs(args: argparse.Namespace) -> None:
    """Info lines from the library would land between the table or the progress bar."""
    if not getattr(args, "verbose", False):
        for name in ("jobsys", "worker", "pgserver"):
            logging.getLogger(name).setLevel(logging.WARNING)
        # the pool logs each failed connection attempt; the one-line error says it once
        for name in ("psycopg", "psycopg.pool"):
            logging.getLogger(name).setLevel(logging.ERROR)


def run_with_jobs(args: argparse.Namespace, body: Callable[[JobSystem], Awaitable[int]], *,
                  push: bool = False) -> int:
    """Run `body` with a JobSystem on the command's database; errors become one line."""
    quiet_library_logs(args)

    async def main(url: str) -> int:
        async with await JobSystem.connect(url, push=push) as jobs:
            return await body(jobs)

    try:
        with batch_database(args) as url:
            return asyncio.run(main(url))
    except (errors.JobsysError, pydantic.ValidationError, BadInput) as exc:
        return error_exit(exc)
    except OSError as exc:  # the database or its data directory
        say(one_line(f"cannot reach the database: {exc}"))
        return EXIT_FAILED


def print_json(value: Any) -> None:
    """One JSON document on stdout."""
    sys.stdout.write(json.dumps(value, ensure_ascii=False, indent=2, default=str) + "\n")
    sys.stdout.flush()


def when(value: dt.datetime | str | None) -> str:
    """A timestamp in local time to the second, or '-'."""
    if value is None:
        return "-"
    if isinstance(value, str):
        try:
            value = dt.datetime.fromisoformat(value)
        except ValueError:
            return value
    return value.astimezone().strftime("%Y-%m-%d %H:%M:%S")


def table(headers: list[str], rows: list[list[str]]) -> str:
    """Left-aligned columns, two spaces apart; the last column is not padded."""
    widths = [max(len(str(row[i])) for row in [headers, *rows]) for i in range(len(headers))]
    lines = []
    for row in [headers, *rows]:
        cells = [str(cell).ljust(widths[i]) if i < len(row) - 1 else str(cell) for i, cell in enumerate(row)]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)
