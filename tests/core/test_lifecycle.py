"""Assignment and job transitions, legal and illegal."""

from __future__ import annotations

import pytest

from jobsys import IllegalTransition, NotFound, StaleRun
from jobsys.models import AssignmentStatus as A
from jobsys.models import JobStatus
from jobsys.system import JobSystem
from tests.core.helpers import add_worker
from tests.support.postgres import Db


async def _job_on(jobs: JobSystem, devices: int = 4, **target: object):  # type: ignore[no-untyped-def]
    session = await add_worker(jobs, "w1", devices)
    created = await jobs.create_job(target_url="https://example.com", duration_sec=5, **target)
    return session, created.job


async def test_claim_start_complete_completes_the_job(jobs: JobSystem, db: Db) -> None:
    session, job = await _job_on(jobs, 3)
    claimed = await jobs.claim_assignments(session.worker_id)
    assert len(claimed) == 3 and all(c.attempt == 1 for c in claimed)
    assert await jobs.claim_assignments(session.worker_id) == []  # every device is busy
    for run in claimed:
        await jobs.start_assignment(run.assignment_id, run.attempt)
        await jobs.complete_assignment(run.assignment_id, run.attempt, {"elapsed_sec": 5})
    detail = await jobs.get_job(job.id)
    assert detail.status is JobStatus.COMPLETED
    assert (detail.completed_count, detail.running_count) == (3, 0)
    assert all(a.status is A.COMPLETED and a.result == {"elapsed_sec": 5} for a in detail.assignments)
    assert db.value("select count(*) from jobsys.devices where running_assignment_id is not null") == 0
    assert db.counters_match() == []


async def test_a_completed_run_stores_its_result_as_reported_by_either_call(jobs: JobSystem, db: Db) -> None:
    """complete_assignment and a completed report to finish_assignments store the same result,
    null fields included, and end the device's failure streak."""
    session, _ = await _job_on(jobs, 2)
    single, batched = await jobs.claim_assignments(session.worker_id, start=True)
    db.run("update jobsys.devices set failure_streak = 2")
    result = {"elapsed_sec": 5, "note": None, "nested": {"x": None}}
    await jobs.complete_assignment(single.assignment_id, single.attempt, result)
    await jobs.finish_assignments(session.worker_id, [
        {"assignment_id": batched.assignment_id, "attempt": batched.attempt, "outcome": "completed", "result": result}])
    stored = db.rows("select result, error, lease_expires_at, finished_at is not null from jobsys.job_assignments "
                     "where id = any(%s) order by id", ([single.assignment_id, batched.assignment_id],))
    assert stored == [(result, None, None, True)] * 2
    assert db.rows("select running_assignment_id, failure_streak from jobsys.devices") == [(None, 0)] * 2


async def test_a_device_runs_one_assignment_at_a_time(jobs: JobSystem) -> None:
    session = await add_worker(jobs, "w1", 1)
    first = await jobs.create_job(target_url="https://example.com/1", duration_sec=5)
    second = await jobs.create_job(target_url="https://example.com/2", duration_sec=5)
    [run] = await jobs.claim_assignments(session.worker_id)
    assert run.job_id == first.job.id  # oldest first
    assert await jobs.claim_assignments(session.worker_id) == []
    await jobs.complete_assignment(run.assignment_id, run.attempt)
    [run2] = await jobs.claim_assignments(session.worker_id)
    assert run2.job_id == second.job.id


async def test_finishing_twice_or_with_an_old_attempt_is_stale(jobs: JobSystem, db: Db) -> None:
    session, job = await _job_on(jobs, 1)
    [run] = await jobs.claim_assignments(session.worker_id)
    await jobs.complete_assignment(run.assignment_id, run.attempt)
    with pytest.raises(StaleRun):
        await jobs.complete_assignment(run.assignment_id, run.attempt)
    with pytest.raises(StaleRun):
        await jobs.fail_assignment(run.assignment_id, run.attempt, "late")
    with pytest.raises(StaleRun):
        await jobs.start_assignment(run.assignment_id, run.attempt)
    with pytest.raises(NotFound):
        await jobs.complete_assignment(999_999, 1)
    assert (await jobs.get_job(job.id)).completed_count == 1
    assert db.counters_match() == []


async def test_pause_stops_new_starts_and_running_ones_finish(jobs: JobSystem, db: Db) -> None:
    session = await add_worker(jobs, "w1", 2)
    job = (await jobs.create_job(target_url="https://example.com", duration_sec=5,
                                 target_type="device_count", target_value=2)).job
    [running] = await jobs.claim_assignments(session.worker_id, limit=1)
    paused = await jobs.pause_job(job.id)
    assert paused.status is JobStatus.PAUSED
    assert await jobs.claim_assignments(session.worker_id) == []  # paused: nothing starts
    await jobs.complete_assignment(running.assignment_id, running.attempt)  # running one finishes
    statuses = sorted(a.status.value for a in (await jobs.get_job(job.id)).assignments)
    assert statuses == ["completed", "paused"]
    with pytest.raises(IllegalTransition):
        await jobs.pause_job(job.id)
    resumed = await jobs.resume_job(job.id)
    assert resumed.status is JobStatus.ACTIVE
    [rest] = await jobs.claim_assignments(session.worker_id)
    await jobs.complete_assignment(rest.assignment_id, rest.attempt)
    assert (await jobs.get_job(job.id)).status is JobStatus.COMPLETED
    with pytest.raises(IllegalTransition):
        await jobs.resume_job(job.id)
    assert db.counters_match() == []


async def test_cancel_stops_everything_and_late_reports_do_not_count(jobs: JobSystem, db: Db) -> None:
    session = await add_worker(jobs, "w1", 3)
    job = (await jobs.create_job(target_url="https://example.com", duration_sec=5)).job
    [running] = await jobs.claim_assignments(session.worker_id, limit=1)
    await jobs.pause_job(job.id)
    cancelled = await jobs.cancel_job(job.id)
    assert cancelled.status is JobStatus.CANCELLED
    assert (cancelled.cancelled_count, cancelled.running_count) == (3, 0)
    with pytest.raises(StaleRun):
        await jobs.complete_assignment(running.assignment_id, running.attempt)
    reply = await jobs.heartbeat(session.worker_id, running=[running.assignment_id])
    assert reply.stop == [running.assignment_id]  # the polling path tells the worker to stop
    assert db.value("select count(*) from jobsys.devices where running_assignment_id is not null") == 0
    with pytest.raises(IllegalTransition):
        await jobs.cancel_job(job.id)
    with pytest.raises(IllegalTransition):
        await jobs.pause_job(job.id)
    assert db.counters_match() == []


async def test_delete_removes_job_and_assignments_and_frees_devices(jobs: JobSystem, db: Db) -> None:
    session, job = await _job_on(jobs, 2)
    [run, _] = await jobs.claim_assignments(session.worker_id)
    await jobs.delete_job(job.id)
    with pytest.raises(NotFound):
        await jobs.get_job(job.id)
    with pytest.raises(NotFound):
        await jobs.delete_job(job.id)
    with pytest.raises(NotFound):
        await jobs.complete_assignment(run.assignment_id, run.attempt)
    assert db.value("select count(*) from jobsys.job_assignments") == 0
    assert db.value("select count(*) from jobsys.devices where running_assignment_id is not null") == 0


async def test_rename_and_update(jobs: JobSystem) -> None:
    _, job = await _job_on(jobs, 1)
    assert job.title == "example.com"
    renamed = await jobs.update_job(job.id, {"title": "  Landing page check "})
    assert renamed.title == "Landing page check"
    paused = await jobs.update_job(job.id, {"status": "paused"})
    assert paused.status is JobStatus.PAUSED


async def test_lease_expiry_requeues_then_fails_then_top_up_replaces(jobs: JobSystem, db: Db) -> None:
    db.setting("max_attempts", 2)
    session = await add_worker(jobs, "w1", 2)
    job = (await jobs.create_job(target_url="https://example.com", duration_sec=5,
                                 target_type="device_count", target_value=1)).job
    [run] = await jobs.claim_assignments(session.worker_id)
    expire = "update jobsys.job_assignments set lease_expires_at = now() - interval '1 second' where id = %s"

    db.run(expire, (run.assignment_id,))
    assert await jobs.rescue_expired_leases() == 1
    [again] = await jobs.claim_assignments(session.worker_id)
    assert (again.assignment_id, again.attempt) == (run.assignment_id, 2)
    with pytest.raises(StaleRun):  # the first run reports late: never counted
        await jobs.complete_assignment(run.assignment_id, run.attempt)

    db.run(expire, (again.assignment_id,))
    assert await jobs.rescue_expired_leases() == 1  # second expiry: last attempt -> failed
    detail = await jobs.get_job(job.id)
    by_device = {a.device_id: a for a in detail.assignments}
    failed = by_device.pop(again.device_id)
    assert failed.status is A.FAILED and "lease expired" in (failed.error or "")
    [replacement] = by_device.values()  # top-up placed it on the other device
    assert replacement.status is A.PENDING
    assert (detail.failed_count, detail.assigned_count, detail.status) == (1, 2, JobStatus.ACTIVE)
    assert db.counters_match() == []


async def test_heartbeat_extends_leases(jobs: JobSystem, db: Db) -> None:
    session, _ = await _job_on(jobs, 1)
    [run] = await jobs.claim_assignments(session.worker_id)
    db.run("update jobsys.job_assignments set lease_expires_at = now() + interval '1 second'")
    await jobs.heartbeat(session.worker_id)
    assert db.value("select lease_expires_at > now() + interval '20 seconds' from jobsys.job_assignments"
                    " where id = %s", (run.assignment_id,))


async def test_fail_with_retry_requeues_on_the_same_device(jobs: JobSystem, db: Db) -> None:
    session, job = await _job_on(jobs, 1)
    [run] = await jobs.claim_assignments(session.worker_id)
    state = await jobs.fail_assignment(run.assignment_id, run.attempt, "screen locked", retry=True)
    assert (state.status, state.attempt) == (A.PENDING, 2)
    [again] = await jobs.claim_assignments(session.worker_id)
    state = await jobs.fail_assignment(again.assignment_id, again.attempt, "still locked")
    assert state.status is A.FAILED
    assert (await jobs.get_job(job.id)).failed_count == 1
    assert db.counters_match() == []


async def test_stale_devices_go_offline_and_their_queue_moves(jobs: JobSystem, db: Db) -> None:
    await add_worker(jobs, "old", 2)
    job = (await jobs.create_job(target_url="https://example.com", duration_sec=5)).job
    fresh = await add_worker(jobs, "new", 2)
    db.run("update jobsys.devices set last_heartbeat_at = now() - interval '5 minutes' where serial like 'old-%'")
    db.run("update jobsys.workers set last_heartbeat_at = now() - interval '5 minutes' where name = 'old'")
    result = await jobs.maintain(force=True)
    assert result["offline_devices"] == 2
    detail = await jobs.get_job(job.id)
    assert {a.serial for a in detail.assignments} == {"new-000", "new-001"}
    assert detail.assigned_count == 2
    devices = await jobs.list_devices()
    assert (devices.summary.offline, devices.summary.idle) == (2, 2)
    assert len(await jobs.claim_assignments(fresh.worker_id)) == 2
    assert db.counters_match() == []


async def test_new_session_of_a_device_releases_its_running_run_at_once(jobs: JobSystem, db: Db) -> None:
    first = await add_worker(jobs, "pc", 1)
    job = (await jobs.create_job(target_url="https://example.com", duration_sec=5)).job
    [run] = await jobs.claim_assignments(first.worker_id)
    second = await add_worker(jobs, "pc", 1)  # same serials, new process session
    [again] = await jobs.claim_assignments(second.worker_id)
    assert (again.assignment_id, again.attempt) == (run.assignment_id, 2)
    with pytest.raises(StaleRun):
        await jobs.complete_assignment(run.assignment_id, run.attempt)
    await jobs.complete_assignment(again.assignment_id, again.attempt)
    assert (await jobs.get_job(job.id)).status is JobStatus.COMPLETED
    assert db.counters_match() == []


async def test_release_returns_a_run_to_the_queue(jobs: JobSystem) -> None:
    session, job = await _job_on(jobs, 1)
    [run] = await jobs.claim_assignments(session.worker_id)
    state = await jobs.release_assignment(run.assignment_id, run.attempt, "worker shutting down")
    assert (state.status, state.attempt) == (A.PENDING, 2)
    await jobs.stop_worker(session.worker_id)
    detail = await jobs.get_job(job.id)
    assert detail.assigned_count == 0  # its device went offline: the queue was released
    assert (await jobs.list_devices()).summary.offline == 1
