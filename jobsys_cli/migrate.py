"""`jobsys migrate`: apply the migrations that are missing."""

from __future__ import annotations

import argparse
from typing import Any

from jobsys import config, migrations
from jobsys_cli.options import add_database_options


def cmd_migrate(args: argparse.Namespace) -> int:
    with config.database(args.database_url, args.data_dir) as db:
        applied = migrations.migrate(db.url)
        print(f"applied {len(applied)} migration(s)" + (f": {', '.join(applied)}" if applied else " (up to date)"))
    return 0


def add_parser(subparsers: Any) -> None:
    migrate = subparsers.add_parser("migrate", help="apply supabase/migrations to the database",
                                    description="Apply the migrations that are missing; safe to repeat.")
    add_database_options(migrate)
    migrate.set_defaults(handler=cmd_migrate)
