"""The worker as a real subprocess: kill -9, SIGTERM and a Postgres restart."""

from __future__ import annotations

import asyncio
import os
import pathlib
import signal
import subprocess
import sys
from typing import Any, Iterator

import psycopg
import pytest

from jobsys import migrations
from jobsys.models import JobStatus
from jobsys.system import JobSystem
from tests.conftest import Db, fresh_postgres, wait_until


def spawn_worker(db_url: str, tmp: pathlib.Path, name: str = "pc1", devices: int = 10,
                 speed: float = 5.0, *extra: str) -> subprocess.Popen[str]:
    log = open(tmp / f"{name}.log", "a")  # noqa: SIM115 - closed with the process
    return subprocess.Popen(
        [sys.executable, "-m", "jobsys.cli", "worker", "--database-url", db_url, "--driver", "sim",
         "--name", name, "--sim-devices", str(devices), "--sim-speed", str(speed),
         "--heartbeat-interval", "0.5", "--poll-interval", "0.2", "--evidence-dir", str(tmp / "evidence"),
         *extra],
        stdout=log, stderr=subprocess.STDOUT, text=True)


@pytest.fixture
def procs() -> Iterator[list[subprocess.Popen[str]]]:
    running: list[subprocess.Popen[str]] = []
    yield running
    for proc in running:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


async def test_kill_9_mid_run_then_restart_completes_exactly_once(
        jobs: JobSystem, db: Db, db_url: str, tmp_path: pathlib.Path, procs: list[subprocess.Popen[str]]) -> None:
    procs.append(spawn_worker(db_url, tmp_path))
    await wait_until(lambda: db.value("select count(*) from jobsys.devices where state = 'online'") == 10,
                     timeout_s=30, what="worker registered")
    created = await jobs.create_job(target_url="https://example.com", duration_sec=20)  # 4 s at speed 5
    await wait_until(lambda: db.value("select count(*) from jobsys.job_assignments where started_at is not null")
                     == 10, timeout_s=30, what="all runs started")
    procs[0].send_signal(signal.SIGKILL)
    procs[0].wait()
    procs.append(spawn_worker(db_url, tmp_path))  # same name: same serials, fresh session
    await wait_until(lambda: db.value("select status from jobsys.jobs where id = %s", (created.job.id,))
                     == "completed", timeout_s=60, what="job completed after the restart")
    detail = await jobs.get_job(created.job.id)
    assert (detail.completed_count, detail.running_count, detail.failed_count) == (10, 0, 0)
    assert all(a.status.value == "completed" and a.attempt == 2 for a in detail.assignments)
    assert db.counters_match() == []


async def test_sigterm_lets_running_work_finish_and_exits_zero(
        jobs: JobSystem, db: Db, db_url: str, tmp_path: pathlib.Path, procs: list[subprocess.Popen[str]]) -> None:
    procs.append(spawn_worker(db_url, tmp_path, "pc2", 3, 5.0, "--grace", "30"))
    await wait_until(lambda: db.value("select count(*) from jobsys.devices where state = 'online'") == 3,
                     timeout_s=30, what="worker registered")
    created = await jobs.create_job(target_url="https://example.com", duration_sec=5)  # 1 s
    await wait_until(lambda: db.value("select count(*) from jobsys.job_assignments where started_at is not null")
                     == 3, timeout_s=30, what="runs started")
    procs[0].send_signal(signal.SIGTERM)
    assert await asyncio.to_thread(procs[0].wait, 60) == 0
    detail = await jobs.get_job(created.job.id)
    assert detail.status is JobStatus.COMPLETED  # the grace period let them finish
    assert db.value("select count(*) from jobsys.devices where state = 'offline'") == 3


async def test_sigterm_past_the_grace_period_releases_running_work(
        jobs: JobSystem, db: Db, db_url: str, tmp_path: pathlib.Path, procs: list[subprocess.Popen[str]]) -> None:
    procs.append(spawn_worker(db_url, tmp_path, "pc3", 2, 1.0, "--grace", "0.1"))
    await wait_until(lambda: db.value("select count(*) from jobsys.devices where state = 'online'") == 2,
                     timeout_s=30, what="worker registered")
    created = await jobs.create_job(target_url="https://example.com", duration_sec=600)
    await wait_until(lambda: db.value("select count(*) from jobsys.job_assignments where started_at is not null")
                     == 2, timeout_s=30, what="runs started")
    procs[0].send_signal(signal.SIGTERM)
    assert await asyncio.to_thread(procs[0].wait, 60) == 0
    detail = await jobs.get_job(created.job.id)
    assert detail.running_count == 0 and detail.completed_count == 0
    # released to the queue, then the stopped worker's devices gave their queue up
    assert detail.assigned_count == 0
    assert db.counters_match() == []


@pytest.fixture
def own_postgres() -> Iterator[tuple[Any, str]]:
    with fresh_postgres() as server:
        url = server.get_uri()
        migrations.migrate(url)
        yield server, url


def _pg_ctl(server: Any, *args: str) -> None:
    import pgserver

    pg_ctl = pathlib.Path(pgserver.__file__).parent / "pginstall" / "bin" / "pg_ctl"
    user = "pgserver" if os.geteuid() == 0 else None  # pgserver runs the server as this user when root
    subprocess.run([str(pg_ctl), "-D", str(server.pgdata), "-w", *args], check=True, capture_output=True,
                   timeout=120, **({"user": user} if user else {}))


def pg_stop(server: Any) -> None:
    _pg_ctl(server, "stop", "-m", "fast")


def pg_start(server: Any) -> None:
    # -l: the server must not inherit our pipes, or run() would wait for it to exit
    _pg_ctl(server, "start", "-o", f'-h "" -k {server.pgdata}', "-l", str(server.pgdata / "log"))


async def test_postgres_restart_mid_run_loses_nothing(
        own_postgres: tuple[Any, str], tmp_path: pathlib.Path, procs: list[subprocess.Popen[str]]) -> None:
    server, url = own_postgres
    db = Db(url)
    procs.append(spawn_worker(url, tmp_path, "pc4", 5, 5.0))
    await wait_until(lambda: db.value("select count(*) from jobsys.devices where state = 'online'") == 5,
                     timeout_s=30, what="worker registered")
    async with await JobSystem.connect(url) as jobs:
        created = await jobs.create_job(target_url="https://example.com", duration_sec=10)  # 2 s
    await wait_until(lambda: db.value("select count(*) from jobsys.job_assignments where started_at is not null")
                     == 5, timeout_s=30, what="runs started")
    pg_stop(server)
    log = tmp_path / "pc4.log"
    await wait_until(lambda: "run(s) waits for the database" in log.read_text(), timeout_s=30,
                     what="the worker buffering its reports while Postgres is down")
    pg_start(server)

    def completed() -> bool:
        try:
            return db.value("select status from jobsys.jobs where id = %s", (created.job.id,)) == "completed"
        except psycopg.OperationalError:
            return False

    await wait_until(completed, timeout_s=60, what="job completed after the restart")
    assert db.value("select count(*) from jobsys.job_assignments where status = 'completed' and attempt = 1") == 5
    assert db.counters_match() == []
