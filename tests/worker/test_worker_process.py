"""The worker as a real subprocess: kill -9, SIGTERM and a Postgres restart."""

from __future__ import annotations

import asyncio
import pathlib
import signal
import subprocess
from typing import Any

import psycopg

from jobsys.models import JobStatus
from jobsys.system import JobSystem
from tests.support.postgres import Db, pg_start, pg_stop
from tests.support.processes import spawn_worker
from tests.support.waiting import wait_until


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
