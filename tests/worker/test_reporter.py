"""The worker's reporter on real Postgres: outcomes that queue up go in one call."""

from __future__ import annotations

import asyncio

from jobsys import aio
from jobsys.system import JobSystem
from tests.core.helpers import add_worker
from tests.support.postgres import Db
from worker.reporter import Outcome, Reporter


async def test_queued_outcomes_go_in_one_call_and_stale_ones_are_dropped(jobs: JobSystem, db: Db) -> None:
    session = await add_worker(jobs, "w1", 5)
    created = await jobs.create_job(target_url="https://example.com", duration_sec=5)
    runs = await jobs.claim_assignments(session.worker_id, start=True)
    await jobs.complete_assignment(runs[0].assignment_id, runs[0].attempt)  # its report below is late
    reporter = Reporter(jobs)
    reporter.bind(session.worker_id)
    reporter.submit(Outcome(runs[0].assignment_id, runs[0].attempt, "complete"))
    reporter.submit(Outcome(runs[1].assignment_id, runs[1].attempt, "fail", error=""))
    for run in runs[2:]:
        reporter.submit(Outcome(run.assignment_id, run.attempt, "complete", result={"ok": True}))
    assert len(reporter.pending_ids()) == 5

    task = asyncio.create_task(reporter.run())
    try:
        await asyncio.wait_for(reporter.drain(), timeout=30)
    finally:
        await aio.cancel_and_wait([task])
    assert (reporter.calls, reporter.sent, reporter.dropped) == (1, 4, 1)
    assert reporter.pending_ids() == []
    job = await jobs.get_job(created.job.id)
    assert (job.completed_count, job.failed_count, job.running_count) == (4, 1, 0)
    assert db.value("select error from jobsys.job_assignments where id = %s", (runs[1].assignment_id,)) == "failed"
    assert db.counters_match() == []


def test_settling_an_old_attempts_report_keeps_a_newer_attempt_pending(jobs: JobSystem) -> None:
    """The heartbeat lists pending reports as runs the worker knows: dropping attempt 2 when
    attempt 1's report lands would end attempt 2's lease while its own report waits."""
    reporter = Reporter(jobs)
    first, second = Outcome(7, 1, "release", error="worker shut down"), Outcome(7, 2, "complete")
    reporter.submit(first)
    reporter.submit(second)
    reporter._settle([first], sent=1)
    assert reporter.pending_ids() == [7]
    reporter._settle([second], sent=1)
    assert reporter.pending_ids() == []
