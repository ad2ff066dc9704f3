"""Each device takes its oldest pending run, although claims start at the device's queue
floor (the run it claimed last) instead of walking its finished runs."""

from __future__ import annotations

import uuid

import psycopg

from jobsys.system import JobSystem
from tests.core.helpers import add_worker
from tests.support.postgres import Db

URL = "https://example.com/queue"


async def _run_one(jobs: JobSystem, worker_id: uuid.UUID) -> uuid.UUID:
    """Claim the device's next run, complete it, and return its job id."""
    [run] = await jobs.claim_assignments(worker_id, start=True)
    await jobs.complete_assignment(run.assignment_id, run.attempt, {})
    return run.job_id


async def test_a_resumed_job_comes_before_newer_jobs(jobs: JobSystem, db: Db) -> None:
    session = await add_worker(jobs, "w1", 1)
    older = (await jobs.create_job(target_url=f"{URL}/older", duration_sec=5)).job
    await jobs.pause_job(older.id)
    between = (await jobs.create_job(target_url=f"{URL}/between", duration_sec=5)).job
    assert await _run_one(jobs, session.worker_id) == between.id  # the floor is now past `older`
    await jobs.resume_job(older.id)
    newer = (await jobs.create_job(target_url=f"{URL}/newer", duration_sec=5)).job
    assert await _run_one(jobs, session.worker_id) == older.id
    assert await _run_one(jobs, session.worker_id) == newer.id
    assert db.counters_match() == []


async def test_a_fan_out_that_commits_after_a_newer_claim_is_still_run(jobs: JobSystem, db_url: str, db: Db) -> None:
    session = await add_worker(jobs, "w1", 1)
    async with await psycopg.AsyncConnection.connect(db_url) as slow:
        # This job's run gets its id first, but is committed only after the device has
        # claimed a run with a higher id: it ends up below the device's floor.
        cur = await slow.execute(
            "select (jobsys.create_job(%s, 5, 'all_devices') -> 'job' ->> 'id')::uuid", (f"{URL}/slow",))
        row = await cur.fetchone()
        assert row is not None
        slow_job_id = row[0]
        fast = (await jobs.create_job(target_url=f"{URL}/fast", duration_sec=5)).job
        assert await _run_one(jobs, session.worker_id) == fast.id
        await slow.commit()
    assert db.value("select d.queue_floor > a.id from jobsys.devices d join jobsys.job_assignments a"
                    " on a.device_id = d.id where a.job_id = %s", (slow_job_id,))
    assert await _run_one(jobs, session.worker_id) == slow_job_id
    assert await jobs.claim_assignments(session.worker_id) == []
    assert db.counters_match() == []


async def test_a_device_takes_the_highest_priority_first_then_the_oldest(jobs: JobSystem, db: Db) -> None:
    """Issue 17: priority -10..10 (default 0). Below 0 waits for everything else, above 0
    goes before it; equal priorities keep their order of creation."""
    session = await add_worker(jobs, "w1", 1)
    created = {}
    for name, priority in [("low", -5), ("old", 0), ("urgent", 3), ("new", 0), ("first", 9), ("later", 3),
                           ("lowest", -10)]:
        created[(await jobs.create_job(target_url=f"{URL}/{name}", duration_sec=5, priority=priority)).job.id] = name
    order = [created[await _run_one(jobs, session.worker_id)] for _ in created]
    assert order == ["first", "urgent", "later", "old", "new", "low", "lowest"]
    assert db.counters_match() == []


async def test_priority_survives_a_pause_and_a_clone(jobs: JobSystem) -> None:
    session = await add_worker(jobs, "w1", 1)
    plain = (await jobs.create_job(target_url=f"{URL}/plain", duration_sec=5)).job
    urgent = (await jobs.create_job(target_url=f"{URL}/urgent", duration_sec=5, priority=5)).job
    assert urgent.priority == 5
    await jobs.pause_job(urgent.id)
    await jobs.resume_job(urgent.id)
    assert await _run_one(jobs, session.worker_id) == urgent.id
    clone = (await jobs.clone_job(urgent.id)).job
    assert clone.priority == 5
    assert await _run_one(jobs, session.worker_id) == clone.id
    assert await _run_one(jobs, session.worker_id) == plain.id


async def test_a_run_of_another_priority_does_not_move_the_queue_floor(jobs: JobSystem) -> None:
    """Runs of priority 0 keep their order around a claimed run of another priority."""
    session = await add_worker(jobs, "w1", 1)
    old = (await jobs.create_job(target_url=f"{URL}/old", duration_sec=5)).job
    urgent = (await jobs.create_job(target_url=f"{URL}/urgent", duration_sec=5, priority=5)).job
    assert await _run_one(jobs, session.worker_id) == urgent.id
    new = (await jobs.create_job(target_url=f"{URL}/new", duration_sec=5)).job
    assert await _run_one(jobs, session.worker_id) == old.id
    assert await _run_one(jobs, session.worker_id) == new.id
