"""Issue 17: scheduled jobs (start_at). A job whose start_at is ahead is stored `scheduled`
with no runs, so no claim can take anything of it; maintain() starts it when start_at comes
(jobsys.release_scheduled_jobs); pause / resume / cancel / delete work on it."""

from __future__ import annotations

import datetime as dt

import psycopg
import pytest

from jobsys import IllegalTransition, InvalidInput, NotFound
from jobsys.models import JobStatus
from jobsys.system import JobSystem
from tests.core.helpers import add_worker
from tests.support.postgres import Db
from tests.support.waiting import wait_until

URL = "https://example.com/status"


def _in(seconds: float) -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=seconds)


async def test_a_scheduled_job_runs_nothing_before_start_at_and_starts_after(jobs: JobSystem, db: Db) -> None:
    session = await add_worker(jobs, "w1", 3)
    start_at = _in(2)
    created = await jobs.create_job(target_url=URL, duration_sec=5, target_type="percentage",
                                    target_value=100, start_at=start_at)
    job = created.job
    assert created.assigned == 0
    assert job.status is JobStatus.SCHEDULED and job.assigned_count == 0
    assert job.start_at is not None and abs((job.start_at - start_at).total_seconds()) < 0.001
    assert await jobs.claim_assignments(session.worker_id, start=True) == []
    await jobs.maintain(force=True)
    assert (await jobs.get_job(job.id)).status is JobStatus.SCHEDULED
    assert await jobs.claim_assignments(session.worker_id, start=True) == []
    listed = await jobs.list_jobs()
    assert (listed.summary.scheduled, listed.summary.active) == (1, 0)
    assert [j.id for j in (await jobs.list_jobs(status="scheduled")).jobs] == [job.id]
    assert db.counters_match() == []

    async def started() -> bool:
        await jobs.maintain(force=True)
        return (await jobs.get_job(job.id)).status is JobStatus.ACTIVE
    await wait_until(started, timeout_s=30, what="maintain() to start the scheduled job")
    assert dt.datetime.now(dt.timezone.utc) >= start_at
    active = await jobs.get_job(job.id)
    assert (active.target_count, active.assigned_count) == (3, 3)
    claimed = await jobs.claim_assignments(session.worker_id, start=True)
    assert len(claimed) == 3
    for run in claimed:
        await jobs.complete_assignment(run.assignment_id, run.attempt, {})
    assert (await jobs.get_job(job.id)).status is JobStatus.COMPLETED
    assert db.counters_match() == []


async def test_start_at_now_or_past_starts_at_once(jobs: JobSystem, db: Db) -> None:
    await add_worker(jobs, "w1", 2)
    for start_at in (_in(-3600), dt.datetime.now(dt.timezone.utc)):
        created = await jobs.create_job(target_url=URL, duration_sec=5, start_at=start_at)
        assert created.job.status is JobStatus.ACTIVE and created.assigned == 2
        assert created.job.start_at is not None
    assert db.counters_match() == []


async def test_a_scheduled_job_does_not_need_devices_now_and_resolves_its_target_at_start(
        jobs: JobSystem, db: Db) -> None:
    job = (await jobs.create_job(target_url=URL, duration_sec=5, target_type="all_devices",
                                 start_at=_in(3600))).job
    assert job.status is JobStatus.SCHEDULED and job.target_count == 0
    session = await add_worker(jobs, "w1", 4)  # registration's top-up leaves scheduled jobs alone
    assert (await jobs.get_job(job.id)).assigned_count == 0
    assert await jobs.claim_assignments(session.worker_id) == []
    db.run("update jobsys.jobs set start_at = now() - interval '1 second' where id = %s", (job.id,))
    await jobs.maintain(force=True)
    started = await jobs.get_job(job.id)
    assert started.status is JobStatus.ACTIVE and (started.target_count, started.assigned_count) == (4, 4)
    assert len(await jobs.claim_assignments(session.worker_id)) == 4
    # None healthy at its start: a percentage / all_devices job ends incomplete at once.
    other = (await jobs.create_job(target_url=URL, duration_sec=5, start_at=_in(3600))).job
    db.run("update jobsys.devices set state = 'offline'")
    db.run("update jobsys.jobs set start_at = now() - interval '1 second' where id = %s", (other.id,))
    await jobs.maintain(force=True)
    ended = await jobs.get_job(other.id)
    assert ended.status is JobStatus.INCOMPLETE and ended.end_reason is not None
    assert ended.end_reason.value == "no_eligible_devices"
    assert db.counters_match() == []


async def test_pause_resume_cancel_delete_on_a_scheduled_job(jobs: JobSystem, db: Db) -> None:
    session = await add_worker(jobs, "w1", 2)
    job = (await jobs.create_job(target_url=URL, duration_sec=5, start_at=_in(3600))).job
    paused = await jobs.pause_job(job.id)
    assert paused.status is JobStatus.PAUSED
    await jobs.maintain(force=True)
    resumed = await jobs.resume_job(job.id)  # start_at still ahead: back on its schedule
    assert resumed.status is JobStatus.SCHEDULED and resumed.assigned_count == 0
    assert await jobs.claim_assignments(session.worker_id) == []
    with pytest.raises(IllegalTransition):
        await jobs.resume_job(job.id)
    with pytest.raises(IllegalTransition):
        await jobs.retry_job(job.id)

    # Paused past its start_at: resume starts it now; it is not started while paused.
    await jobs.pause_job(job.id)
    db.run("update jobsys.jobs set start_at = now() - interval '1 second' where id = %s", (job.id,))
    await jobs.maintain(force=True)
    assert (await jobs.get_job(job.id)).status is JobStatus.PAUSED
    started = await jobs.resume_job(job.id)
    assert started.status is JobStatus.ACTIVE and started.assigned_count == 2

    cancelled_job = (await jobs.create_job(target_url=URL, duration_sec=5, start_at=_in(3600))).job
    cancelled = await jobs.cancel_job(cancelled_job.id)
    assert cancelled.status is JobStatus.CANCELLED and cancelled.ended_at is not None
    db.run("update jobsys.jobs set start_at = now() - interval '1 second' where id = %s", (cancelled_job.id,))
    await jobs.maintain(force=True)
    assert (await jobs.get_job(cancelled_job.id)).status is JobStatus.CANCELLED

    deleted_job = (await jobs.create_job(target_url=URL, duration_sec=5, start_at=_in(3600))).job
    await jobs.delete_job(deleted_job.id)
    with pytest.raises(NotFound):
        await jobs.get_job(deleted_job.id)
    assert db.counters_match() == []


async def test_timeout_counts_from_start_at(jobs: JobSystem, db: Db) -> None:
    await add_worker(jobs, "w1", 2)
    job = (await jobs.create_job(target_url=URL, duration_sec=600, timeout_sec=60, start_at=_in(3600))).job
    # Created long ago, starting now: the limit counts from start_at, not created_at.
    db.run("update jobsys.jobs set created_at = now() - interval '2 hours',"
           " start_at = now() - interval '1 second' where id = %s", (job.id,))
    await jobs.maintain(force=True)
    await jobs.maintain(force=True)
    assert (await jobs.get_job(job.id)).status is JobStatus.ACTIVE
    db.run("update jobsys.jobs set start_at = now() - interval '61 seconds' where id = %s", (job.id,))
    await jobs.maintain(force=True)
    ended = await jobs.get_job(job.id)
    assert ended.status is JobStatus.INCOMPLETE and ended.end_reason is not None
    assert ended.end_reason.value == "timed_out"
    assert db.counters_match() == []


async def test_bad_start_at_is_refused_and_nothing_is_stored(jobs: JobSystem, db: Db) -> None:
    await add_worker(jobs, "w1", 1)
    for bad in (dt.datetime(2030, 1, 1, 12, 0),  # no timezone
                "2030-01-01T12:00:00",  # no timezone
                "tomorrow", _in(366 * 86400), "2030-13-01T00:00:00Z"):
        with pytest.raises(InvalidInput):
            await jobs.create_job(target_url=URL, duration_sec=5, start_at=bad)
    job = (await jobs.create_job(target_url=URL, duration_sec=5, start_at=_in(364 * 86400).isoformat())).job
    assert job.status is JobStatus.SCHEDULED
    await jobs.delete_job(job.id)
    assert db.value("select count(*) from jobsys.jobs") == 0


def test_sql_checks_the_start_at_bound(db: Db) -> None:
    with pytest.raises(psycopg.Error) as info:
        db.run("select jobsys.create_job('https://x.org', 5, 'all_devices', p_start_at => now() + interval '366 days')")
    assert info.value.sqlstate == "JS400"
    with pytest.raises(psycopg.Error) as info:
        db.run("select jobsys.create_job('https://x.org', 5, 'all_devices', p_start_at => 'infinity')")
    assert info.value.sqlstate == "JS400"
    assert db.value("select count(*) from jobsys.jobs") == 0
