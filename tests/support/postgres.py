"""Real Postgres for tests: a throwaway pgserver, the name of the migrated template every
test database is copied from (jobsys.embedded makes and copies it), stopping and starting
a server under a running test, and `Db` for setting up and checking state with plain SQL."""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import pathlib
import queue
import shutil
import subprocess
import tempfile
import threading
from typing import Any, Iterator

import psycopg
from psycopg import sql

from jobsys import embedded

TEMPLATE_DB = "jobsys_template"
PG_CTL_TIMEOUT_S = 120

logging.getLogger("pgserver").setLevel(logging.WARNING)


def world_traversable_dir(prefix: str) -> pathlib.Path:
    """A new directory for Postgres data. Not pytest's tmp_path (0700): as root, pgserver
    runs Postgres as the `pgserver` user, which must reach the data directory."""
    directory = pathlib.Path(tempfile.mkdtemp(prefix=prefix))
    directory.chmod(0o755)
    return directory


@contextlib.contextmanager
def fresh_postgres() -> Iterator[Any]:
    """A new pgserver in its own directory (see world_traversable_dir), removed afterwards."""
    import pgserver

    directory = world_traversable_dir("jobsys-test-pg-")
    server = pgserver.get_server(directory / "pgdata", cleanup_mode="stop")
    try:
        yield server
    finally:
        server.cleanup()
        shutil.rmtree(directory, ignore_errors=True)


def _pg_ctl(server: Any, *args: str) -> None:
    import pgserver

    pg_ctl = pathlib.Path(pgserver.__file__).parent / "pginstall" / "bin" / "pg_ctl"
    user = "pgserver" if os.geteuid() == 0 else None  # pgserver runs the server as this user when root
    subprocess.run([str(pg_ctl), "-D", str(server.pgdata), "-w", *args], check=True, capture_output=True,
                   timeout=PG_CTL_TIMEOUT_S, **({"user": user} if user else {}))


def pg_stop(server: Any) -> None:
    _pg_ctl(server, "stop", "-m", "fast")


def pg_start(server: Any) -> None:
    # -l: the server must not inherit our pipes, or run() would wait for it to exit
    _pg_ctl(server, "start", "-o", f'-h "" -k {server.pgdata}', "-l", str(server.pgdata / "log"))


class DatabaseCopies:
    """Copies of the template made ahead (up to three) by a thread of their own: a copy costs
    about 0.2 s of CREATE DATABASE, which then overlaps the previous test instead of adding
    to it. The session's server is never stopped under it (tests that stop Postgres use a
    server of their own). A copy that fails stops the thread, and every later take() raises
    that failure rather than waiting for a copy that will never come."""

    AHEAD = 2

    def __init__(self, admin_url: str, template: str) -> None:
        self._admin_url, self._template = admin_url, template
        self._names = (f"t_{n}" for n in itertools.count())
        self._ready: queue.Queue[str] = queue.Queue(maxsize=self.AHEAD)
        self._failure: BaseException | None = None
        self._closing = threading.Event()
        self._thread = threading.Thread(target=self._make_ahead, name="test database copies", daemon=True)
        self._thread.start()

    def _make_ahead(self) -> None:
        while not self._closing.is_set():
            name = next(self._names)
            try:
                embedded.copy_database(self._admin_url, self._template, name)
            except BaseException as exc:  # noqa: BLE001 - raised by take()
                self._failure = exc
                return
            self._ready.put(name)  # blocks while AHEAD copies wait; close() makes room

    def take(self) -> str:
        """A fresh copy's name; drop it with drop() when done."""
        while True:
            try:
                return self._ready.get(timeout=1)
            except queue.Empty:
                if not self._thread.is_alive():
                    raise RuntimeError("no database copy: making one failed") from self._failure

    def drop(self, name: str) -> None:
        embedded.drop_database(self._admin_url, name)

    def close(self) -> None:
        self._closing.set()
        while self._thread.is_alive() or not self._ready.empty():
            with contextlib.suppress(queue.Empty):
                self.drop(self._ready.get(timeout=1))


# Each job with its exact counters: the row plus its job_run_counts (jobsys.counted).
EXACT_JOBS = "(select c.* from jobsys.jobs s cross join lateral jobsys.counted(s) c)"

COUNTER_MISMATCHES_SQL = f"""
    select j.id, j.assigned_count, j.running_count, j.completed_count, j.failed_count,
           j.cancelled_count, c.*
    from {EXACT_JOBS} j
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
