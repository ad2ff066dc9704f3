"""Concurrent claimers and operators on real Postgres: nothing claimed twice, no device
running two runs, counters equal count(*)."""

from __future__ import annotations

import asyncio
import collections
import random
import uuid

import pytest

from jobsys import IllegalTransition, StaleRun
from jobsys.models import RunReport
from jobsys.system import JobSystem
from tests.core.helpers import add_worker
from tests.support.postgres import EXACT_JOBS, Db

WORKERS = 10
DEVICES_PER_WORKER = 10
JOBS = 20  # 20 jobs x 100 devices = 2,000 assignments
CLAIMERS_PER_WORKER = 2  # two claimers contend for the same devices: the device mutex is tested


@pytest.mark.parametrize("batched", [False, True], ids=["one-call-per-transition", "batched"])
async def test_twenty_claimers_over_two_thousand_assignments(db_url: str, db: Db, batched: bool) -> None:
    """batched: claim with start and one finish_assignments per claim, as the worker does."""
    jobs = await JobSystem.connect(db_url)
    try:
        sessions = [await add_worker(jobs, f"w{i}", DEVICES_PER_WORKER) for i in range(WORKERS)]
        job_ids = [(await jobs.create_job(target_url=f"https://example.com/{i}", duration_sec=1)).job.id
                   for i in range(JOBS)]
        assert db.value("select count(*) from jobsys.job_assignments") == 2000

        claims: collections.Counter[tuple[int, int]] = collections.Counter()
        running_on: dict[uuid.UUID, int] = {}
        overlaps: list[tuple[uuid.UUID, int, int]] = []
        done = asyncio.Event()

        async def claimer(worker_id: uuid.UUID) -> None:
            rng = random.Random()
            idle_rounds = 0
            while not done.is_set():
                batch = await jobs.claim_assignments(worker_id, start=batched)
                if not batch:
                    idle_rounds += 1
                    if idle_rounds > 50 and db.value(
                            "select count(*) from jobsys.job_assignments where status <> 'completed'") == 0:
                        done.set()
                    continue
                idle_rounds = 0
                for run in batch:
                    claims[(run.assignment_id, run.attempt)] += 1
                    if run.device_id in running_on:
                        overlaps.append((run.device_id, running_on[run.device_id], run.assignment_id))
                    running_on[run.device_id] = run.assignment_id
                if batched:
                    reports = []
                    for run in batch:
                        running_on.pop(run.device_id, None)
                        retry = run.attempt == 1 and rng.random() < 0.05
                        reports.append(RunReport(assignment_id=run.assignment_id, attempt=run.attempt,
                                                 outcome="retry" if retry else "completed",
                                                 error="flaky" if retry else None))
                    finished = await jobs.finish_assignments(worker_id, reports)
                    assert not any(f.stale for f in finished)
                    continue
                for run in batch:
                    assert not run.started
                    await jobs.start_assignment(run.assignment_id, run.attempt)
                    # Until this report commits the device is still busy in the database, so
                    # any claim of it by the other claimer before this line is a violation.
                    running_on.pop(run.device_id, None)
                    if run.attempt == 1 and rng.random() < 0.05:  # one retry, never the last attempt
                        await jobs.fail_assignment(run.assignment_id, run.attempt, "flaky", retry=True)
                    else:
                        await jobs.complete_assignment(run.assignment_id, run.attempt)

        async def operator() -> None:
            rng = random.Random(7)
            while not done.is_set():
                job_id = rng.choice(job_ids)
                try:
                    await jobs.pause_job(job_id)
                    await jobs.resume_job(job_id)
                except (IllegalTransition, StaleRun):
                    pass  # completed meanwhile

        tasks = [asyncio.create_task(claimer(s.worker_id)) for s in sessions for _ in range(CLAIMERS_PER_WORKER)]
        tasks.append(asyncio.create_task(operator()))
        await asyncio.wait_for(asyncio.gather(*tasks), timeout=120)

        assert overlaps == []
        assert max(claims.values()) == 1  # no (assignment, attempt) claimed twice
        assert db.counters_match() == []
        # A job whose last runs finished side by side is completed by the next upkeep
        # (jobsys.count_runs: no finish waits for the job row).
        await jobs.maintain(force=True)
        assert db.value("select count(*) from jobsys.jobs where status <> 'completed'") == 0
        assert db.value(f"select sum(completed_count) from {EXACT_JOBS} j") == 2000
        assert db.value("select count(*) from jobsys.devices where running_assignment_id is not null") == 0
    finally:
        await jobs.close()
