"""The embedded default: Postgres from the pip package `pgserver`, data kept in a directory.

Several processes may share one data directory (`jobsys up` and extra `jobsys worker
--data-dir`): pgserver starts the server once and stops it when the last user exits.

Template databases: tests and benchmarks migrate one database once, then copy it
(`CREATE DATABASE ... TEMPLATE`) for each test or scenario, so every copy starts from the
same empty schema without running the migrations again.
"""

from __future__ import annotations

import contextlib
import os
import pathlib
from collections.abc import Iterator

import platformdirs
import psycopg
from psycopg import conninfo, sql

from jobsys import migrations

ENV_DATA_DIR = "JOBSYS_DATA_DIR"


def default_data_dir() -> pathlib.Path:
    configured = os.environ.get(ENV_DATA_DIR)
    if configured:
        return pathlib.Path(configured).expanduser()
    return pathlib.Path(platformdirs.user_data_dir("jobsys"))


class EmbeddedPostgres:
    def __init__(self, data_dir: pathlib.Path) -> None:
        self.data_dir = data_dir
        self._server: object | None = None

    def start(self) -> str:
        """Start (or join) the server; return its connection URL."""
        import pgserver  # imported here: only the embedded mode needs it

        pgdata = self.data_dir / "pgdata"
        pgdata.parent.mkdir(parents=True, exist_ok=True)
        self._server = pgserver.get_server(pgdata, cleanup_mode="stop")
        return self.url

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("embedded Postgres is not started")
        return self._server.get_uri()  # type: ignore[attr-defined]

    def stop(self) -> None:
        if self._server is not None:
            self._server.cleanup()  # type: ignore[attr-defined]
            self._server = None


# Template databases ---------------------------------------------------------------------
def database_url(server_url: str, dbname: str) -> str:
    """The URL of database `dbname` on the server `server_url` points at."""
    return conninfo.make_conninfo(server_url, dbname=dbname)


def create_template(admin_url: str, name: str) -> str:
    """Create database `name` (replacing one of that name) with every migration applied; its URL."""
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(sql.SQL("drop database if exists {}").format(sql.Identifier(name)))
        conn.execute(sql.SQL("create database {}").format(sql.Identifier(name)))
    url = database_url(admin_url, name)
    migrations.migrate(url)
    return url


def copy_database(admin_url: str, template: str, name: str) -> str:
    """Create database `name` as a copy of `template`; its URL."""
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(sql.SQL("create database {} template {}").format(
            sql.Identifier(name), sql.Identifier(template)))
    return database_url(admin_url, name)


def drop_database(admin_url: str, name: str) -> None:
    """Drop database `name` if it exists, closing the connections still on it."""
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(sql.SQL("drop database if exists {} with (force)").format(sql.Identifier(name)))


@contextlib.contextmanager
def database_copy(admin_url: str, template: str, name: str) -> Iterator[str]:
    """A copy of `template` named `name` for the duration of the block; its URL."""
    url = copy_database(admin_url, template, name)
    try:
        yield url
    finally:
        drop_database(admin_url, name)
