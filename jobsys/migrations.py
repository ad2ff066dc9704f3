"""Apply supabase/migrations to a Postgres database, in order, once each.

Versions are recorded in supabase_migrations.schema_migrations, the table the Supabase
CLI uses, so `supabase db push` and `jobsys migrate` agree on what is applied.
"""

from __future__ import annotations

import dataclasses
import importlib.resources
import pathlib
import re

import psycopg

_FILE_RE = re.compile(r"^(\d{14})_(.+)\.sql$")
_LOCK_KEY = 0x6A6F6273  # "jobs": one migrator at a time


@dataclasses.dataclass(frozen=True)
class Migration:
    version: str
    name: str
    sql: str


def migrations_dir() -> pathlib.Path:
    """The packaged copy inside the wheel, or the source tree in a checkout."""
    packaged = importlib.resources.files("jobsys") / "_migrations"
    if packaged.is_dir():
        return pathlib.Path(str(packaged))
    return pathlib.Path(__file__).resolve().parent.parent / "supabase" / "migrations"


def load_migrations(directory: pathlib.Path | None = None) -> list[Migration]:
    directory = directory or migrations_dir()
    found = []
    for path in sorted(directory.glob("*.sql")):
        match = _FILE_RE.match(path.name)
        if match:
            found.append(Migration(match.group(1), match.group(2), path.read_text(encoding="utf-8")))
    if not found:
        raise FileNotFoundError(f"no migrations found in {directory}")
    return found


def migrate(conninfo: str, directory: pathlib.Path | None = None) -> list[str]:
    """Apply what is missing; return the versions applied now. Safe to run concurrently."""
    applied_now: list[str] = []
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute("select pg_advisory_lock(%s)", (_LOCK_KEY,))
        try:
            conn.execute("create schema if not exists supabase_migrations")
            conn.execute(
                "create table if not exists supabase_migrations.schema_migrations"
                " (version text primary key, statements text[], name text)"
            )
            done = {row[0] for row in conn.execute("select version from supabase_migrations.schema_migrations")}
            for migration in load_migrations(directory):
                if migration.version in done:
                    continue
                with conn.transaction():
                    conn.execute(migration.sql)
                    conn.execute(
                        "insert into supabase_migrations.schema_migrations (version, name, statements)"
                        " values (%s, %s, %s)",
                        (migration.version, migration.name, [migration.sql]),
                    )
                applied_now.append(migration.version)
        finally:
            conn.execute("select pg_advisory_unlock(%s)", (_LOCK_KEY,))
    return applied_now
