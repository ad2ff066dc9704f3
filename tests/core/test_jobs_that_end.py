"""Issue 17: every device job ends and says why (incomplete with end_reason, the top-up
grace, time limits), retry of failed runs, clone, export, and target_value with all_devices."""

from __future__ import annotations

import pytest

from jobsys import IllegalTransition, InvalidInput
from jobsys.models import AssignmentStatus as A
from jobsys.models import EndReason, JobStatus
from jobsys.system import JobSystem
from tests.core.helpers import add_worker
from tests.support.postgres import Db
from tests.support.waiting import wait_until

URL = "https://example.com/status"


async def _complete_all(jobs: JobSystem, worker_id: object) -> int:
    """Claim (and start) every free device's next run and complete it, until none is left."""
    done = 0
    while claimed := await jobs.claim_assignments(worker_id, start=True):  # type: ignore[arg-type]
        for run in claimed:
            await jobs.complete_assignment(run.assignment_id, run.attempt, {"evidence_path": f"/ev/{run.serial}.png"})
            done += 1
    return done


async def _fail_all(jobs: JobSystem, worker_id: object) -> int:
    failed = 0
    while claimed := await jobs.claim_assignments(worker_id, start=True):  # type: ignore[arg-type]
        for run in claimed:
            await jobs.fail_assignment(run.assignment_id, run.attempt, "browser crashed")
            failed += 1
    return failed


async def test_count_50_on_20_devices_ends_incomplete_after_the_grace(jobs: JobSystem, db: Db) -> None:
    session = await add_worker(jobs, "w1", 20)
    job = (await jobs.create_job(target_url=URL, duration_sec=5, target_type="device_count",
                                 target_value=50, topup_grace_sec=0)).job
    assert job.topup_grace_sec == 0 and job.waiting_for_devices is None
    assert await _complete_all(jobs, session.worker_id) == 20
    await jobs.maintain(force=True)  # every run ended, still short: the wait starts
    waiting = await jobs.get_job(job.id)
    assert waiting.status is JobStatus.ACTIVE
    assert waiting.waiting_for_devices == 30 and waiting.waiting_since is not None
    await jobs.maintain(force=True)  # the grace (0 s) has passed
    ended = await jobs.get_job(job.id)
    assert ended.status is JobStatus.INCOMPLETE
    assert ended.end_reason is EndReason.NO_ELIGIBLE_DEVICES
    assert (ended.completed_count, ended.failed_count, ended.target_count) == (20, 0, 50)
    assert ended.ended_at is not None and ended.waiting_for_devices is None
    listed = await jobs.list_jobs()
    assert (listed.summary.active, listed.summary.incomplete) == (0, 1)
    assert [j.id for j in (await jobs.list_jobs(status="incomplete")).jobs] == [job.id]
    assert (await jobs.list_jobs(status="active")).jobs == []
    with pytest.raises(IllegalTransition):
        await jobs.pause_job(job.id)
    assert db.counters_match() == []


async def test_count_50_completes_when_30_more_devices_join_within_the_grace(jobs: JobSystem, db: Db) -> None:
    first = await add_worker(jobs, "w1", 20)
    job = (await jobs.create_job(target_url=URL, duration_sec=5, target_type="device_count",
                                 target_value=50)).job  # the default grace (topup_grace_sec setting: 120 s)
    assert await _complete_all(jobs, first.worker_id) == 20
    await jobs.maintain(force=True)
    await jobs.maintain(force=True)
    waiting = await jobs.get_job(job.id)
    assert waiting.status is JobStatus.ACTIVE and waiting.waiting_for_devices == 30
    listed = await jobs.list_jobs()
    assert listed.summary.waiting_for_devices == 1
    second = await add_worker(jobs, "w2", 30)  # registration tops the job up
    topped = await jobs.get_job(job.id)
    assert topped.assigned_count == 50 and topped.waiting_for_devices is None
    assert await _complete_all(jobs, second.worker_id) == 30
    done = await jobs.get_job(job.id)
    assert done.status is JobStatus.COMPLETED and done.completed_count == 50 and done.end_reason is None
    assert db.counters_match() == []


async def test_all_failing_phones_end_incomplete_and_retry_reopens_and_completes(jobs: JobSystem, db: Db) -> None:
    session = await add_worker(jobs, "w1", 4)
    job = (await jobs.create_job(target_url=URL, duration_sec=5, topup_grace_sec=0)).job
    with pytest.raises(IllegalTransition):
        await jobs.retry_job(job.id)  # nothing failed yet
    assert await _fail_all(jobs, session.worker_id) == 4
    await jobs.maintain(force=True)
    await jobs.maintain(force=True)
    ended = await jobs.get_job(job.id)
    assert ended.status is JobStatus.INCOMPLETE and ended.end_reason is EndReason.MAX_ATTEMPTS
    assert (ended.completed_count, ended.failed_count) == (0, 4)
    assert db.counters_match() == []

    retried = await jobs.retry_job(job.id)  # the phones work again
    assert retried.retried == 4
    assert retried.job.status is JobStatus.ACTIVE and retried.job.end_reason is None
    assert (retried.job.failed_count, retried.job.ended_at) == (0, None)
    assert {a.attempt for a in (await jobs.get_job(job.id)).assignments} == {1}
    assert await _complete_all(jobs, session.worker_id) == 4
    done = await jobs.get_job(job.id)
    assert done.status is JobStatus.COMPLETED and (done.completed_count, done.failed_count) == (4, 0)
    with pytest.raises(IllegalTransition):
        await jobs.retry_job(job.id)
    assert db.counters_match() == []


async def test_timeout_ends_a_running_job_and_stops_its_running_runs(jobs: JobSystem, db: Db) -> None:
    session = await add_worker(jobs, "w1", 3)
    job = (await jobs.create_job(target_url=URL, duration_sec=600, timeout_sec=1)).job
    assert job.timeout_sec == 1
    running = await jobs.claim_assignments(session.worker_id, limit=2, start=True)
    assert len(running) == 2  # the third run stays pending

    async def ended() -> bool:
        await jobs.maintain(force=True)
        return (await jobs.get_job(job.id)).status is not JobStatus.ACTIVE
    await wait_until(ended, timeout_s=30, what="the time limit to end the job")

    detail = await jobs.get_job(job.id)
    assert detail.status is JobStatus.INCOMPLETE and detail.end_reason is EndReason.TIMED_OUT
    assert (detail.running_count, detail.cancelled_count) == (0, 3)
    assert {a.status for a in detail.assignments} == {A.CANCELLED}
    assert db.value("select count(*) from jobsys.devices where running_assignment_id is not null") == 0
    reply = await jobs.heartbeat(session.worker_id, running=[r.assignment_id for r in running])
    assert sorted(reply.stop) == sorted(r.assignment_id for r in running)  # the worker is told to stop
    assert db.counters_match() == []


async def test_a_job_that_timed_out_is_not_retried_but_says_to_clone_it(jobs: JobSystem, db: Db) -> None:
    session = await add_worker(jobs, "w1", 2)
    job = (await jobs.create_job(target_url=URL, duration_sec=600, timeout_sec=1)).job
    [run] = await jobs.claim_assignments(session.worker_id, limit=1, start=True)
    await jobs.fail_assignment(run.assignment_id, run.attempt, "browser crashed")

    async def ended() -> bool:
        await jobs.maintain(force=True)
        return (await jobs.get_job(job.id)).status is JobStatus.INCOMPLETE
    await wait_until(ended, timeout_s=30, what="the time limit to end the job")
    before = db.dump()
    with pytest.raises(IllegalTransition, match="clone"):
        await jobs.retry_job(job.id)
    assert db.dump() == before


async def test_cancel_keeps_every_run(jobs: JobSystem, db: Db) -> None:
    session = await add_worker(jobs, "w1", 3)
    job = (await jobs.create_job(target_url=URL, duration_sec=5)).job
    [run] = await jobs.claim_assignments(session.worker_id, limit=1, start=True)
    await jobs.complete_assignment(run.assignment_id, run.attempt)
    await jobs.cancel_job(job.id)
    detail = await jobs.get_job(job.id)
    assert detail.status is JobStatus.CANCELLED and detail.ended_at is not None
    assert sorted(a.status.value for a in detail.assignments) == ["cancelled", "cancelled", "completed"]
    assert db.counters_match() == []


async def test_target_value_with_all_devices_is_accepted_and_ignored(jobs: JobSystem) -> None:
    await add_worker(jobs, "w1", 3)
    job = (await jobs.create_job(target_url=URL, duration_sec=5, target_type="all_devices",
                                 target_value=100)).job
    assert (job.target_value, job.target_count) == (None, 3)
    with pytest.raises(InvalidInput):
        await jobs.create_job(target_url=URL, duration_sec=5, target_type="all_devices", target_value=101)


def test_sql_checks_the_same_bounds(db: Db) -> None:
    import psycopg
    for args in ("'all_devices', 101", "'all_devices', null, null, 'open_url', null, 0",
                 "'all_devices', null, null, 'open_url', null, 604801",
                 "'all_devices', null, null, 'open_url', null, null, -1",
                 "'all_devices', null, null, 'open_url', null, null, 86401"):
        with pytest.raises(psycopg.Error) as info:
            db.run(f"select jobsys.create_job('https://x.org', 5, {args})")
        assert info.value.sqlstate == "JS400", args
    assert db.value("select count(*) from jobsys.jobs") == 0


async def test_clone_makes_a_new_job_with_the_same_settings(jobs: JobSystem) -> None:
    await add_worker(jobs, "w1", 4)
    job = (await jobs.create_job(target_url=URL, duration_sec=7, target_type="percentage", target_value=50,
                                 title="check", timeout_sec=300, topup_grace_sec=10)).job
    await jobs.cancel_job(job.id)
    clone = await jobs.clone_job(job.id)
    assert clone.job.id != job.id and clone.assigned == 2
    same = ("title", "target_url", "duration_sec", "target_type", "target_value", "max_attempts",
            "timeout_sec", "topup_grace_sec", "target_count")
    assert {k: getattr(clone.job, k) for k in same} == {k: getattr(job, k) for k in same}
    assert clone.job.status is JobStatus.ACTIVE


async def test_export_rows_name_device_worker_and_evidence(jobs: JobSystem) -> None:
    session = await add_worker(jobs, "w1", 2)
    job = (await jobs.create_job(target_url=URL, duration_sec=5)).job
    [ok, bad] = await jobs.claim_assignments(session.worker_id, start=True)
    await jobs.complete_assignment(ok.assignment_id, ok.attempt, {"evidence_path": "/ev/a.png"})
    await jobs.fail_assignment(bad.assignment_id, bad.attempt, "no network")
    rows = {r.device_serial: r for r in await jobs.export_job_runs(job.id)}
    assert set(rows) == {ok.serial, bad.serial}
    assert rows[ok.serial].status is A.COMPLETED and rows[ok.serial].evidence == "/ev/a.png"
    assert rows[ok.serial].worker_name == "w1" and rows[ok.serial].started_at is not None
    assert rows[bad.serial].status is A.FAILED and rows[bad.serial].error == "no network"
