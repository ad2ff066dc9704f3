"""A throwaway Postgres per benchmark: pgserver in a temp dir, migrations applied once to a
template database, and a fresh copy of it for each scenario so runs never see each
other's rows or bloat."""

from __future__ import annotations

import contextlib
import itertools
import logging
import pathlib
import tempfile
from collections.abc import Iterator
from typing import Any

import psycopg
from psycopg import conninfo, sql

from jobsys import migrations

TEMPLATE_DB = "bench_template"
BLANK_TEMPLATE = "template1"  # Postgres's own: no jobsys schema

logging.getLogger("pgserver").setLevel(logging.WARNING)


class BenchPostgres:
    """One embedded server; `database()` hands out migrated, empty databases."""

    def __init__(self, server: Any) -> None:
        self._server = server
        self._names = itertools.count()
        self.admin_url: str = server.get_uri()
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(sql.SQL("create database {}").format(sql.Identifier(TEMPLATE_DB)))
        migrations.migrate(self.url_for(TEMPLATE_DB))

    @property
    def postmaster_pid(self) -> int | None:
        pid = self._server.get_pid()
        return int(pid) if pid else None

    def url_for(self, dbname: str) -> str:
        return conninfo.make_conninfo(self.admin_url, dbname=dbname)

    def checkpoint(self) -> None:
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute("checkpoint")

    def version(self) -> str:
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            row = conn.execute("show server_version").fetchone()
        return str(row[0]) if row else "unknown"

    @contextlib.contextmanager
    def database(self, template: str = TEMPLATE_DB) -> Iterator[str]:
        """A fresh copy of the migrated template (or of `BLANK_TEMPLATE`: an empty database,
        for a peer with its own schema); dropped afterwards."""
        name = f"bench_{next(self._names)}"
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(sql.SQL("create database {} template {}").format(
                sql.Identifier(name), sql.Identifier(template)))
        try:
            yield self.url_for(name)
        finally:
            with psycopg.connect(self.admin_url, autocommit=True) as conn:
                conn.execute(sql.SQL("drop database if exists {} with (force)").format(sql.Identifier(name)))


@contextlib.contextmanager
def embedded_postgres() -> Iterator[BenchPostgres]:
    """Start pgserver (stock settings) in a temp dir; stop it and remove the dir after."""
    import pgserver

    with tempfile.TemporaryDirectory(prefix="jobsys-bench-") as tmp:
        server = pgserver.get_server(pathlib.Path(tmp) / "pgdata", cleanup_mode="stop")
        try:
            yield BenchPostgres(server)
        finally:
            server.cleanup()
