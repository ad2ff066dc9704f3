"""Real Postgres for every test: one pgserver per session, migrations applied once to a
template database, and a fresh `CREATE DATABASE ... TEMPLATE` copy per test."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import pathlib
import shutil
import tempfile
import time
from typing import Any, AsyncIterator, Awaitable, Callable, Iterator

import psycopg
import pytest
from psycopg import conninfo, sql

from jobsys import migrations
from jobsys.system import JobSystem

TEMPLATE_DB = "jobsys_template"
_counter = itertools.count()

logging.getLogger("pgserver").setLevel(logging.WARNING)


@contextlib.contextmanager
def fresh_postgres() -> Iterator[Any]:
    """A new pgserver in its own directory. Not under pytest's tmp_path: that is private to
    root (0700), and as root pgserver runs Postgres as the `pgserver` user, which must
    reach its data directory."""
    import pgserver

    directory = pathlib.Path(tempfile.mkdtemp(prefix="jobsys-test-pg-"))
    directory.chmod(0o755)
    server = pgserver.get_server(directory / "pgdata", cleanup_mode="stop")
    try:
        yield server
    finally:
        server.cleanup()
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture(scope="session")
def pg_server() -> Iterator[Any]:
    with fresh_postgres() as server:
        yield server


def url_for(server_url: str, dbname: str) -> str:
    return conninfo.make_conninfo(server_url, dbname=dbname)


@pytest.fixture(scope="session")
def template_url(pg_server: Any) -> str:
    admin = pg_server.get_uri()
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(sql.SQL("drop database if exists {}").format(sql.Identifier(TEMPLATE_DB)))
        conn.execute(sql.SQL("create database {}").format(sql.Identifier(TEMPLATE_DB)))
    url = url_for(admin, TEMPLATE_DB)
    migrations.migrate(url)
    return url


@pytest.fixture
def db_url(pg_server: Any, template_url: str) -> Iterator[str]:
    admin = pg_server.get_uri()
    name = f"t_{next(_counter)}_{int(time.time() * 1000) % 100000}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(sql.SQL("create database {} template {}").format(
            sql.Identifier(name), sql.Identifier(TEMPLATE_DB)))
    yield url_for(admin, name)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(sql.SQL("drop database if exists {} with (force)").format(sql.Identifier(name)))


@pytest.fixture
async def jobs(db_url: str) -> AsyncIterator[JobSystem]:
    system = await JobSystem.connect(db_url)
    yield system
    await system.close()


COUNTER_MISMATCHES_SQL = """
    select j.id, j.assigned_count, j.running_count, j.completed_count, j.failed_count,
           j.cancelled_count, c.*
    from jobsys.jobs j
    left join lateral (
      select count(a.id) as assigned,
             count(a.id) filter (where a.status = 'running') as running,
             count(a.id) filter (where a.status = 'completed') as completed,
             count(a.id) filter (where a.status = 'failed') as failed,
             count(a.id) filter (where a.status = 'cancelled') as cancelled
      from jobsys.job_assignments a where a.job_id = j.id) c on true
    where (j.assigned_count, j.running_count, j.completed_count, j.failed_count, j.cancelled_count)
       <> (c.assigned, c.running, c.completed, c.failed, c.cancelled)"""


class Db:
    """Direct SQL for setting up and checking state in tests (not how the library works)."""

    def __init__(self, url: str) -> None:
        self.url = url

    def rows(self, query: str, params: Any = None) -> list[tuple[Any, ...]]:
        with psycopg.connect(self.url, autocommit=True) as conn:
            return conn.execute(query, params).fetchall()

    def value(self, query: str, params: Any = None) -> Any:
        rows = self.rows(query, params)
        return rows[0][0] if rows else None

    def run(self, query: str, params: Any = None) -> None:
        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute(query, params)

    def setting(self, key: str, value: float) -> None:
        self.run("update jobsys.settings set value = %s where key = %s", (value, key))

    def counters_match(self) -> list[tuple[Any, ...]]:
        """Jobs whose stored counters differ from count(*) over their assignments."""
        return self.rows(COUNTER_MISMATCHES_SQL)

    def dump(self) -> list[tuple[Any, ...]]:
        """Every row of every jobsys table, to compare before and after a rejected call."""
        out: list[tuple[Any, ...]] = []
        for table in ("workers", "devices", "jobs", "job_assignments"):
            out.extend((table, *row) for row in self.rows(
                sql.SQL("select * from jobsys.{} order by 1").format(sql.Identifier(table))))
        return out


@pytest.fixture
def db(db_url: str) -> Db:
    return Db(db_url)


async def wait_until(predicate: Callable[[], Awaitable[bool] | bool], timeout_s: float = 10.0,
                     what: str = "condition") -> None:
    """Poll a condition with a deadline (never a bare sleep as synchronisation)."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = predicate()
        if asyncio.iscoroutine(result) or isinstance(result, Awaitable):
            result = await result  # type: ignore[misc]
        if result:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")
        await asyncio.sleep(0.02)


ROOT = pathlib.Path(__file__).resolve().parent.parent
