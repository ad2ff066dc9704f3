"""Issue 22: claims and finishes of one job by many workers do not queue on its row. Each
holds the job FOR SHARE and counts its runs in its own job_run_counts row; readers add them
up; a job-level transition (pause) still waits for them; a target met by finishes side by
side is completed by the next upkeep."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator

import psycopg
import pytest

from jobsys.system import JobSystem
from tests.core.helpers import add_worker
from tests.support.postgres import COUNTER_MISMATCHES_SQL, Db
from tests.support.waiting import wait_until


@pytest.fixture
async def open_tx(db_url: str) -> AsyncIterator[list[psycopg.AsyncConnection]]:
    """Connections whose transactions a test leaves open; rolled back at the end."""
    conns: list[psycopg.AsyncConnection] = []
    yield conns
    for conn in conns:
        await conn.rollback()
        await conn.close()


async def _begin(db_url: str, conns: list[psycopg.AsyncConnection]) -> psycopg.AsyncConnection:
    conn = await psycopg.AsyncConnection.connect(db_url)  # not autocommit: the transaction stays open
    conns.append(conn)
    return conn


async def _claim(conn: psycopg.AsyncConnection, worker_id: uuid.UUID) -> list[tuple[int, int]]:
    cur = await conn.execute("select assignment_id, attempt from jobsys.claim_assignments(%s, null, null, true)",
                             (worker_id,))
    return [(row[0], row[1]) for row in await cur.fetchall()]


async def _finish(conn: psycopg.AsyncConnection, worker_id: uuid.UUID, runs: list[tuple[int, int]]) -> None:
    reports = [{"assignment_id": a, "attempt": t, "outcome": "completed"} for a, t in runs]
    await conn.execute("select jobsys.finish_assignments(%s, %s)", (worker_id, json.dumps(reports)))


async def test_claims_of_one_job_by_two_workers_do_not_wait_for_each_other(
        db_url: str, db: Db, jobs: JobSystem, open_tx: list[psycopg.AsyncConnection]) -> None:
    a = await add_worker(jobs, "a", 3)
    b = await add_worker(jobs, "b", 3)
    created = await jobs.create_job(target_url="https://example.com/hot", duration_sec=60)
    first = await _begin(db_url, open_tx)
    assert len(await _claim(first, a.worker_id)) == 3  # uncommitted: holds the job FOR SHARE
    second = await _begin(db_url, open_tx)
    # With the counters on the job row this waited for the first claim's commit.
    claimed = await asyncio.wait_for(_claim(second, b.worker_id), timeout=30)
    assert len(claimed) == 3
    await second.commit()
    await first.commit()
    job = await jobs.get_job(created.job.id)
    assert (job.running_count, job.assigned_count) == (6, 6)
    assert db.value("select count(*) from jobsys.job_run_counts where job_id = %s", (created.job.id,)) == 2
    assert db.rows(COUNTER_MISMATCHES_SQL) == []


async def test_pause_waits_for_a_claim_in_flight_and_then_sees_its_runs(
        db_url: str, db: Db, jobs: JobSystem, open_tx: list[psycopg.AsyncConnection]) -> None:
    a = await add_worker(jobs, "a", 2)
    created = await jobs.create_job(target_url="https://example.com/hot", duration_sec=60)
    claim = await _begin(db_url, open_tx)
    assert len(await _claim(claim, a.worker_id)) == 2
    pause = asyncio.create_task(jobs.pause_job(created.job.id))
    await wait_until(lambda: db.value("""select count(*) from pg_stat_activity
                                         where wait_event_type = 'Lock' and query like '%%pause_job%%'""") == 1)
    assert not pause.done()
    await claim.commit()
    paused = await asyncio.wait_for(pause, timeout=30)
    assert (paused.status, paused.running_count) == ("paused", 2)


async def test_a_target_met_by_finishes_side_by_side_completes_at_the_next_upkeep(
        db_url: str, db: Db, jobs: JobSystem, open_tx: list[psycopg.AsyncConnection]) -> None:
    a = await add_worker(jobs, "a", 1)
    b = await add_worker(jobs, "b", 1)
    created = await jobs.create_job(target_url="https://example.com/hot", duration_sec=60)
    runs = {}
    for session in (a, b):
        conn = await _begin(db_url, open_tx)
        runs[session.worker_id] = await _claim(conn, session.worker_id)
        await conn.commit()
    finishing = [await _begin(db_url, open_tx) for _ in range(2)]
    for conn, session in zip(finishing, (a, b)):
        # Neither sees the other's; with the counters on the job row the second waited here.
        await asyncio.wait_for(_finish(conn, session.worker_id, runs[session.worker_id]), timeout=30)
    for conn in finishing:
        await conn.commit()
    job = await jobs.get_job(created.job.id)
    assert (job.status, job.completed_count, job.target_count) == ("active", 2, 2)
    await jobs.maintain(force=True)
    job = await jobs.get_job(created.job.id)
    assert (job.status, job.completed_count) == ("completed", 2)
    assert db.rows(COUNTER_MISMATCHES_SQL) == []


async def test_the_finish_that_meets_the_target_alone_completes_the_job_at_once(jobs: JobSystem) -> None:
    a = await add_worker(jobs, "a", 2)
    created = await jobs.create_job(target_url="https://example.com/hot", duration_sec=60)
    claimed = await jobs.claim_assignments(a.worker_id, start=True)
    for run in claimed:
        await jobs.complete_assignment(run.assignment_id, run.attempt)
    assert (await jobs.get_job(created.job.id)).status == "completed"


async def test_a_claim_leaves_out_a_job_a_transition_holds_instead_of_waiting(
        db_url: str, db: Db, jobs: JobSystem, open_tx: list[psycopg.AsyncConnection]) -> None:
    a = await add_worker(jobs, "a", 1)
    held = await jobs.create_job(target_url="https://example.com/held", duration_sec=60)
    pause = await _begin(db_url, open_tx)  # a job-level transition in flight: the job row lock
    await pause.execute("select jobsys.lock_job(%s)", (held.job.id,))
    claim = await _begin(db_url, open_tx)
    assert await asyncio.wait_for(_claim(claim, a.worker_id), timeout=30) == []
    await claim.commit()
    await pause.rollback()
    [(assignment_id, _)] = await _claim(claim, a.worker_id)
    await claim.commit()
    assert db.value("select job_id from jobsys.job_assignments where id = %s", (assignment_id,)) == held.job.id
    assert db.rows(COUNTER_MISMATCHES_SQL) == []


async def test_a_claim_in_flight_while_another_sent_progress_gets_its_trailing_event(
        db_url: str, jobs: JobSystem, open_tx: list[psycopg.AsyncConnection]) -> None:
    """The event another transaction sent did not see this claim's count; upkeep compares what
    was sent with the job and sends the trailing event (timestamps cannot tell: the claim's
    change may be older than the event yet commit after it)."""
    a = await add_worker(jobs, "a", 2)
    created = await jobs.create_job(target_url="https://example.com/hot", duration_sec=60)
    claim = await _begin(db_url, open_tx)
    # As if another transaction had just sent job_progress, without this claim's runs.
    await claim.execute("""update jobsys.job_progress_marks set notified_at = clock_timestamp(),
                             sent = jobsys.progress_json(j) from jobsys.jobs j
                           where j.id = %s and job_id = j.id""", (created.job.id,))
    assert len(await _claim(claim, a.worker_id)) == 2  # within the throttle window: no event of its own
    await claim.commit()
    async with await psycopg.AsyncConnection.connect(db_url, autocommit=True) as listener:
        await listener.execute('listen "jobsys:dashboard"')
        await jobs.maintain(force=True)
        progress = None
        async for note in listener.notifies(timeout=30):
            event = json.loads(note.payload)
            if event["event"] == "job_progress" and event["payload"]["job_id"] == str(created.job.id):
                progress = event["payload"]
                break
    assert progress is not None and progress["running_count"] == 2
