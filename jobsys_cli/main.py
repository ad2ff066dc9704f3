"""The `jobsys` command: up, migrate, dashboard, worker, batch-runner, batch, jobs, devices, workers, accounts."""

from __future__ import annotations

import argparse
import errno
import logging
import os
import sys

from jobsys_cli import (
    accounts_cmd,
    batch_cmd,
    batch_runner_cmd,
    dashboard,
    devices_cmd,
    jobs_cmd,
    log_format,
    migrate,
    process,
    up,
    worker_cmd,
    workers_cmd,
)

# Every file and directory the command creates is its owner's only: the embedded Postgres,
# the API token's hash, NiceGUI's sessions, evidence screenshots, exports.
PRIVATE_UMASK = 0o077


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="jobsys", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("--log-format", choices=["text", "json"], default=os.environ.get("JOBSYS_LOG_FORMAT", "text"),
                        help="text (default; $JOBSYS_LOG_FORMAT) or json: one object per line, with the ids "
                             "of each line (job, run, worker, device) as fields")
    sub = parser.add_subparsers(dest="command", required=True)
    up.add_parser(sub)
    dashboard.add_parser(sub)
    migrate.add_parser(sub)
    worker_cmd.add_parser(sub)
    batch_runner_cmd.add_parser(sub)
    batch_cmd.add_parser(sub)
    jobs_cmd.add_parser(sub)
    devices_cmd.add_parser(sub)
    workers_cmd.add_parser(sub)
    accounts_cmd.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    os.umask(PRIVATE_UMASK)
    log_format.configure(logging.DEBUG if args.verbose else logging.INFO, args.log_format)
    if not args.verbose:
        logging.getLogger("pgserver").setLevel(logging.WARNING)  # it logs every pg_ctl call at INFO
        logging.getLogger("psycopg.pool").setLevel(logging.WARNING)
        logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request otherwise
    try:
        return int(args.handler(args) or 0)
    except process.CommandError as exc:
        print(f"jobsys: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        if exc.errno != errno.EADDRINUSE:
            raise
        print(f"jobsys: {exc.strerror} ({getattr(args, 'host', '')}:{getattr(args, 'port', '')}); "
              "choose another with --port", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
