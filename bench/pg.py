"""A throwaway Postgres per benchmark: pgserver in a temp dir, migrations applied once to a
template database, and a fresh copy of it for each scenario so runs never see each
other's rows or bloat (the template and its copies: jobsys.embedded, as the tests make them)."""

from __future__ import annotations

import contextlib
import itertools
import logging
import pathlib
import tempfile
from collections.abc import Iterator
from typing import Any

import psycopg

from jobsys import embedded

TEMPLATE_DB = "bench_template"
BLANK_TEMPLATE = "template1"  # Postgres's own: no jobsys schema

logging.getLogger("pgserver").setLevel(logging.WARNING)


class BenchPostgres:
    """One embedded server; `database()` hands out migrated, empty databases."""

    def __init__(self, server: Any) -> None:
        self._server = server
        self._names = itertools.count()
        self.admin_url: str = server.get_uri()
        embedded.create_template(self.admin_url, TEMPLATE_DB)

    @property
    def postmaster_pid(self) -> int | None:
        pid = self._server.get_pid()
        return int(pid) if pid else None

    def url_for(self, dbname: str) -> str:
        return embedded.database_url(self.admin_url, dbname)

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
        with embedded.database_copy(self.admin_url, template, f"bench_{next(self._names)}") as url:
            yield url


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
