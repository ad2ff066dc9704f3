"""A worker whose phones another worker account's live session holds (issue 16): the server
refuses those serials, the worker logs each once as a warning (not once per heartbeat), keeps
reporting them, and takes them when the other session lets go. Two in-process workers on
real Postgres, each signed in as its own worker account (role authenticated with its JWT
claims, as PostgREST runs a request), with the same simulated serials."""

from __future__ import annotations

import asyncio
import json
import logging
import pathlib
import uuid
from typing import AsyncIterator, Awaitable, Callable

import pytest
from psycopg import conninfo

from jobsys.system import JobSystem
from jobsys.transport.postgres import PostgresTransport
from tests.support.postgres import Db
from tests.support.runners import until_ready
from worker.agent import Worker
from worker.options import WorkerOptions

SERIALS = ["sim-pc-001", "sim-pc-002"]
StartWorker = Callable[[], Awaitable[tuple[Worker, "asyncio.Task[None]"]]]


@pytest.fixture
async def start_worker(db_url: str, tmp_path: pathlib.Path) -> AsyncIterator[StartWorker]:
    """Each call: a worker named "pc" (so the same serials) signed in as a new worker account."""
    started: list[tuple[Worker, asyncio.Task[None], JobSystem]] = []

    async def start() -> tuple[Worker, asyncio.Task[None]]:
        claims = {"sub": str(uuid.uuid4()), "role": "authenticated", "app_metadata": {"jobsys_role": "worker"}}
        options = f"-c role=authenticated -c request.jwt.claims={json.dumps(claims, separators=(',', ':'))}"
        jobs = JobSystem(await PostgresTransport(conninfo.make_conninfo(db_url, options=options), push=False).open())
        worker = Worker(jobs, WorkerOptions(
            name="pc", evidence_dir=tmp_path / "evidence", sim_devices=len(SERIALS), sim_speed=50.0, push=False,
            heartbeat_interval_s=3600.0, poll_interval_s=0.2, safety_poll_s=30.0, shutdown_grace_s=5.0))
        task = asyncio.create_task(worker.run())
        started.append((worker, task, jobs))
        await until_ready(task, worker.registered.is_set, "worker registered")
        return worker, task

    yield start
    for worker, task, jobs in started:
        worker.request_stop()
        await asyncio.wait_for(asyncio.gather(task, return_exceptions=True), 30)
        await jobs.close()


def bound_to(db: Db, worker: Worker) -> list[str]:
    return [row[0] for row in db.rows("select serial from jobsys.devices where worker_id = %s order by serial",
                                      (worker.worker_id,))]


async def test_refused_serials_are_logged_once_and_join_when_released(
        start_worker: StartWorker, db: Db, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="jobsys.worker")
    holder, holder_task = await start_worker()
    assert bound_to(db, holder) == SERIALS

    other, _ = await start_worker()
    assert other.refused == set(SERIALS) and bound_to(db, other) == []
    for _ in range(3):  # heartbeats report the refused phones again; they stay refused
        await other.heartbeat_once()
    assert other.refused == set(SERIALS) and bound_to(db, other) == []
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and "device_refused" in
                r.getMessage()]
    assert sorted(w.split()[1] for w in warnings) == [f"serial={s}" for s in SERIALS]  # once per serial
    assert all("JS423" in w for w in warnings)

    holder.request_stop()  # the holding PC shuts down cleanly: its session lists nothing now
    await asyncio.wait_for(holder_task, 30)
    await other.heartbeat_once()
    assert other.refused == set() and bound_to(db, other) == SERIALS
    assert other.fleet.knows_all()  # it can claim on them now
