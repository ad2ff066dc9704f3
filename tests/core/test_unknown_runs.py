"""A run its worker never heard of (the answer to its claim was lost on the way) goes back
to the queue: the heartbeat extends only the runs the worker lists."""

from __future__ import annotations

from jobsys.system import JobSystem
from tests.core.helpers import add_worker
from tests.support.postgres import Db


async def test_a_run_the_worker_does_not_list_loses_its_lease_and_is_requeued(jobs: JobSystem, db: Db) -> None:
    session = await add_worker(jobs, "w1", 2)
    job = (await jobs.create_job(target_url="https://example.com", duration_sec=600)).job
    known, lost = await jobs.claim_assignments(session.worker_id, start=True)  # the answer "lost" the second

    await jobs.heartbeat(session.worker_id, running=[known.assignment_id])
    assert await jobs.rescue_expired_leases() == 1
    assert db.value("select status from jobsys.job_assignments where id = %s", (known.assignment_id,)) == "running"
    assert db.value("select status || ' ' || attempt from jobsys.job_assignments where id = %s",
                    (lost.assignment_id,)) == "pending 2"
    [again] = await jobs.claim_assignments(session.worker_id, start=True)  # its device is free again
    assert (again.assignment_id, again.attempt) == (lost.assignment_id, 2)
    assert db.counters_match() == []
    assert (await jobs.get_job(job.id)).running_count == 2


async def test_a_heartbeat_without_a_run_list_extends_every_lease(jobs: JobSystem, db: Db) -> None:
    session = await add_worker(jobs, "w1", 2)
    await jobs.create_job(target_url="https://example.com", duration_sec=600)
    await jobs.claim_assignments(session.worker_id, start=True)
    await jobs.heartbeat(session.worker_id)
    assert await jobs.rescue_expired_leases() == 0
    assert db.value("select count(*) from jobsys.job_assignments where status = 'running'") == 2
