"""Batched worker transitions: claim-and-start in one call, and finish_assignments."""

from __future__ import annotations

import json
from typing import Any

import psycopg
import pytest

from jobsys import InvalidInput
from jobsys.models import AssignmentStatus as A
from jobsys.models import JobStatus, RunReport
from jobsys.system import JobSystem
from tests.core.helpers import add_worker
from tests.core.test_access import OPERATOR, WORKER_A, WORKER_B, as_user, register
from tests.support.postgres import Db


def _report(run: Any, outcome: str = "completed", **fields: Any) -> RunReport:
    return RunReport(assignment_id=run.assignment_id, attempt=run.attempt, outcome=outcome, **fields)  # type: ignore[arg-type]


async def test_claim_with_start_starts_the_runs_in_the_same_call(jobs: JobSystem, db: Db) -> None:
    session = await add_worker(jobs, "w1", 2)
    await jobs.create_job(target_url="https://example.com", duration_sec=600)
    started = await jobs.claim_assignments(session.worker_id, limit=1, start=True)
    plain = await jobs.claim_assignments(session.worker_id, limit=1)
    assert [r.started for r in started] == [True] and [r.started for r in plain] == [False]
    lease_sql = ("select started_at is not null, lease_expires_at > now() + interval '10 minutes' "
                 "from jobsys.job_assignments where id = %s")
    assert db.rows(lease_sql, (started[0].assignment_id,)) == [(True, True)]  # lease: duration + grace
    assert db.rows(lease_sql, (plain[0].assignment_id,)) == [(False, False)]  # the short claim lease
    assert db.counters_match() == []


async def test_one_call_finishes_every_kind_of_outcome(jobs: JobSystem, db: Db) -> None:
    session = await add_worker(jobs, "w1", 5)
    created = await jobs.create_job(target_url="https://example.com", duration_sec=5,
                                    target_type="device_count", target_value=4)
    runs = await jobs.claim_assignments(session.worker_id, start=True)
    assert len(runs) == 4
    done, failed, retried, released = runs
    answers = await jobs.finish_assignments(session.worker_id, [
        _report(done, result={"elapsed_sec": 5}),
        _report(failed, "failed", error="screen locked"),
        _report(retried, "retry", error="flaky"),
        _report(released, "release", error="worker shut down"),
    ])
    assert [(a.assignment_id, a.status, a.attempt, a.stale) for a in answers] == [
        (done.assignment_id, A.COMPLETED, 1, False),
        (failed.assignment_id, A.FAILED, 1, False),
        (retried.assignment_id, A.PENDING, 2, False),  # re-queued on its device, next attempt
        (released.assignment_id, A.PENDING, 2, False),
    ]
    detail = await jobs.get_job(created.job.id)
    assert (detail.completed_count, detail.failed_count, detail.running_count) == (1, 1, 0)
    # The failed run was replaced at once by the fifth, untried device (top-up).
    assert detail.assigned_count == 5
    assert db.value("select count(*) from jobsys.devices where running_assignment_id is not null") == 0
    assert db.value("select result from jobsys.job_assignments where id = %s", (done.assignment_id,)) == {
        "elapsed_sec": 5}
    assert db.counters_match() == []


async def test_late_and_foreign_reports_come_back_stale_and_change_nothing(jobs: JobSystem, db: Db) -> None:
    a = await add_worker(jobs, "a", 2)
    b = await add_worker(jobs, "b", 1)
    created = await jobs.create_job(target_url="https://example.com", duration_sec=5)
    [first, second] = await jobs.claim_assignments(a.worker_id, start=True)
    [b_run] = await jobs.claim_assignments(b.worker_id, start=True)
    await jobs.complete_assignment(first.assignment_id, first.attempt)
    # The lease of `second` expires and rescue re-queues it (attempt 2).
    db.run("update jobsys.job_assignments set lease_expires_at = now() - interval '1 second' where id = %s",
           (second.assignment_id,))
    assert await jobs.rescue_expired_leases() == 1
    before = db.dump()

    answers = await jobs.finish_assignments(a.worker_id, [
        _report(first),  # finished already
        _report(second),  # an old attempt
        _report(b_run),  # another worker's run
        RunReport(assignment_id=999_999, attempt=1, outcome="completed"),  # unknown
    ])
    assert [(x.assignment_id, x.stale, x.status) for x in answers] == [
        (first.assignment_id, True, None), (second.assignment_id, True, None),
        (b_run.assignment_id, True, None), (999_999, True, None)]
    assert db.dump() == before
    assert (await jobs.get_job(created.job.id)).completed_count == 1

    # A batch with one stale report still finishes the others.
    answers = await jobs.finish_assignments(b.worker_id, [_report(first), _report(b_run)])
    assert [x.stale for x in answers] == [True, False]
    assert (await jobs.get_job(created.job.id)).completed_count == 2
    assert db.counters_match() == []


async def test_finishing_the_last_runs_completes_the_job(jobs: JobSystem) -> None:
    session = await add_worker(jobs, "w1", 3)
    created = await jobs.create_job(target_url="https://example.com", duration_sec=5)
    runs = await jobs.claim_assignments(session.worker_id, start=True)
    await jobs.finish_assignments(session.worker_id, [_report(r) for r in runs])
    job = await jobs.get_job(created.job.id)
    assert job.status is JobStatus.COMPLETED and job.completed_count == 3


@pytest.mark.parametrize("reports, message", [
    ("{}", "reports must be a JSON array"),
    ("[]", "between 1 and 1000 reports per call"),
    (json.dumps([{"assignment_id": 1, "attempt": 1, "outcome": "completed"}] * 1001), "between 1 and 1000"),
    ('[1]', "each report must be a JSON object"),
    ('[{"attempt": 1, "outcome": "completed"}]', "assignment_id must be a positive integer"),
    ('[{"assignment_id": -3, "attempt": 1, "outcome": "completed"}]', "assignment_id must be a positive integer"),
    ('[{"assignment_id": "1; drop table jobsys.jobs", "attempt": 1, "outcome": "completed"}]',
     "assignment_id must be a positive integer"),
    ('[{"assignment_id": 1, "attempt": 1.5, "outcome": "completed"}]', "attempt must be a positive integer"),
    ('[{"assignment_id": 1, "attempt": 1, "outcome": "done"}]', "outcome must be one of"),
    ('[{"assignment_id": 1, "attempt": 1, "outcome": "failed"}]', "error must say why the run failed"),
    ('[{"assignment_id": 1, "attempt": 1, "outcome": "retry", "error": "  "}]', "error must say why"),
    ('[{"assignment_id": 1, "attempt": 1, "outcome": "completed", "result": [1]}]', "result must be a JSON object"),
    ('[{"assignment_id": 1, "attempt": 1, "outcome": "failed", "error": 7}]', "error must be a string"),
    ('[{"assignment_id": 1, "attempt": 1, "outcome": "completed"}, {"assignment_id": 1, "attempt": 1, '
     '"outcome": "completed"}]', "each run may be reported once per call"),
])
async def test_bad_reports_are_refused_whole_and_change_nothing(
        jobs: JobSystem, db: Db, reports: str, message: str) -> None:
    session = await add_worker(jobs, "w1", 1)
    await jobs.create_job(target_url="https://example.com", duration_sec=5)
    await jobs.claim_assignments(session.worker_id, start=True)
    before = db.dump()
    with pytest.raises(psycopg.Error) as info:  # the SQL function's own check, below the library
        db.run("select jobsys.finish_assignments(%s, %s::jsonb)", (session.worker_id, reports))
    assert info.value.sqlstate == "JS400" and message in str(info.value)
    assert db.dump() == before


async def test_the_library_checks_reports_before_calling(jobs: JobSystem, db: Db) -> None:
    session = await add_worker(jobs, "w1", 1)
    with pytest.raises(InvalidInput, match="between 1 and 1000"):
        await jobs.finish_assignments(session.worker_id, [])
    with pytest.raises(InvalidInput, match="error must say why"):
        await jobs.finish_assignments(session.worker_id, [{"assignment_id": 1, "attempt": 1, "outcome": "failed"}])
    with pytest.raises(InvalidInput, match="outcome"):
        await jobs.finish_assignments(session.worker_id, [{"assignment_id": 1, "attempt": 1, "outcome": "won"}])
    with pytest.raises(InvalidInput, match="worker_id"):
        await jobs.finish_assignments("not-a-uuid", [{"assignment_id": 1, "attempt": 1, "outcome": "completed"}])


def test_a_worker_finishes_only_as_itself(db: Db) -> None:
    worker_a = register(db, WORKER_A, "a", "phone-a")
    register(db, WORKER_B, "b", "phone-b")
    as_user(db, "authenticated", OPERATOR, "select jobsys.create_job('https://example.com', 5, 'all_devices')")
    [(run_id, attempt, *_)] = as_user(db, "authenticated", WORKER_A,
                                      f"select * from jobsys.claim_assignments('{worker_a}', null, null, true)")
    reports = json.dumps([{"assignment_id": run_id, "attempt": attempt, "outcome": "completed"}])
    for who in (WORKER_B, OPERATOR):
        with pytest.raises(psycopg.Error) as info:
            as_user(db, "authenticated", who, f"select jobsys.finish_assignments('{worker_a}', '{reports}')")
        assert info.value.sqlstate == "JS403"
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        as_user(db, "anon", None, f"select jobsys.finish_assignments('{worker_a}', '{reports}')")
    [(answer,)] = as_user(db, "authenticated", WORKER_A,
                          f"select jobsys.finish_assignments('{worker_a}', '{reports}')")
    assert answer[0]["status"] == "completed" and answer[0]["stale"] is False
