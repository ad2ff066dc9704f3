"""Fixtures every test directory can use. Real Postgres for every test: one pgserver per
session, migrations applied once to a template database, and a fresh
`CREATE DATABASE ... TEMPLATE` copy per test, made ahead by a thread. The code behind them is
in tests/support."""

from __future__ import annotations

import subprocess
from typing import Any, AsyncIterator, Iterator

import pytest

from jobsys import embedded, migrations
from jobsys.batch.facade import BatchJobs
from jobsys.system import JobSystem
from tests.support.postgres import TEMPLATE_DB, DatabaseCopies, Db, fresh_postgres
from tests.support.processes import kill_all
from tests.support.runners import RunnerPool


@pytest.fixture(scope="session")
def pg_server() -> Iterator[Any]:
    with fresh_postgres() as server:
        yield server


@pytest.fixture(scope="session")
def template_url(pg_server: Any) -> str:
    return embedded.create_template(pg_server.get_uri(), TEMPLATE_DB)


@pytest.fixture(scope="session")
def database_copies(pg_server: Any, template_url: str) -> Iterator[DatabaseCopies]:
    copies = DatabaseCopies(pg_server.get_uri(), TEMPLATE_DB)
    yield copies
    copies.close()


@pytest.fixture
def db_url(pg_server: Any, database_copies: DatabaseCopies) -> Iterator[str]:
    """A fresh copy of the migrated template, dropped afterwards."""
    name = database_copies.take()
    try:
        yield embedded.database_url(pg_server.get_uri(), name)
    finally:
        database_copies.drop(name)


@pytest.fixture
def own_postgres() -> Iterator[tuple[Any, str]]:
    """A migrated Postgres server of the test's own, to stop and start: (server, its URL)."""
    with fresh_postgres() as server:
        url = server.get_uri()
        migrations.migrate(url)
        yield server, url


@pytest.fixture
async def jobs(db_url: str) -> AsyncIterator[JobSystem]:
    system = await JobSystem.connect(db_url)
    yield system
    await system.close()


@pytest.fixture
def db(db_url: str) -> Db:
    return Db(db_url)


@pytest.fixture
def batch(jobs: JobSystem) -> BatchJobs:
    return BatchJobs.of(jobs)


@pytest.fixture
async def start_runner(db_url: str) -> AsyncIterator[RunnerPool]:
    """Batch runners in-process against the test database, with fast retry timings."""
    pool = RunnerPool(db_url)
    yield pool
    await pool.stop_all()


@pytest.fixture
def procs() -> Iterator[list[subprocess.Popen[str]]]:
    """Subprocesses the test starts; the ones still running are killed afterwards."""
    running: list[subprocess.Popen[str]] = []
    yield running
    kill_all(running)
