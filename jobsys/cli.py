"""The `jobsys` command: up, migrate (and, as they land, dashboard, worker, batch-runner)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import pathlib
import signal
import sys

from jobsys import migrations
from jobsys.config import ENV_DATABASE_URL, resolve_database
from jobsys.embedded import ENV_DATA_DIR

log = logging.getLogger("jobsys")


def _add_database_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--database-url", help=f"Postgres URL (default: ${ENV_DATABASE_URL}, else embedded)")
    parser.add_argument("--data-dir", type=pathlib.Path,
                        help=f"embedded Postgres data directory (default: ${ENV_DATA_DIR} or the user data dir)")


def cmd_migrate(args: argparse.Namespace) -> int:
    url, embedded = resolve_database(args.database_url, args.data_dir)
    try:
        applied = migrations.migrate(url)
        print(f"applied {len(applied)} migration(s)" + (f": {', '.join(applied)}" if applied else " (up to date)"))
    finally:
        if embedded:
            embedded.stop()
    return 0


def _stop_event() -> asyncio.Event:
    """Set on SIGINT/SIGTERM. Installed before anything says it is up, so a signal that
    arrives at once still stops cleanly."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    return stop


async def _up(args: argparse.Namespace, url: str, where: str, applied: list[str]) -> None:
    stop = _stop_event()
    print(f"jobsys is up on {where} ({len(applied)} new migration(s)). Ctrl-C stops it.", flush=True)
    await stop.wait()


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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="jobsys", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    up = sub.add_parser("up", help="start everything on the embedded default",
                        description="Start Postgres (embedded unless --database-url), apply migrations, "
                                    "and run until Ctrl-C.")
    _add_database_options(up)
    up.add_argument("--port", type=int, default=8080, help="dashboard and API port (default 8080)")
    up.add_argument("--sim-devices", type=int, default=20, help="simulated devices on the local worker (0: none)")
    up.set_defaults(handler=cmd_up)

    migrate = sub.add_parser("migrate", help="apply supabase/migrations to the database",
                             description="Apply the migrations that are missing; safe to repeat.")
    _add_database_options(migrate)
    migrate.set_defaults(handler=cmd_migrate)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s %(message)s")
    if not args.verbose:
        logging.getLogger("pgserver").setLevel(logging.WARNING)  # it logs every pg_ctl call at INFO
    return int(args.handler(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
