"""Referential integrity that triggers keep instead of declared foreign keys (migrations
100 and 800): missing parents are refused, in small and in big statements, deletes cascade, and deleting a device while a
fan-out is in flight leaves no assignment without its device."""

from __future__ import annotations

import asyncio
import uuid

import psycopg
import pytest

from jobsys.system import JobSystem
from tests.core.helpers import add_worker
from tests.support.postgres import Db
from tests.support.waiting import wait_until

ORPHANS = ("select count(*) from jobsys.job_assignments a "
           "where not exists (select 1 from jobsys.devices d where d.id = a.device_id)")


async def test_an_assignment_needs_its_job_and_device(jobs: JobSystem, db: Db) -> None:
    session = await add_worker(jobs, "w1", 1)
    job = (await jobs.create_job(target_url="https://example.com", duration_sec=5)).job
    device = session.devices[0].id
    for job_id, device_id, missing in [(uuid.uuid4(), device, "job_id"), (job.id, uuid.uuid4(), "device_id")]:
        with pytest.raises(psycopg.errors.ForeignKeyViolation, match=missing):
            db.run("insert into jobsys.job_assignments (job_id, device_id) values (%s, %s)", (job_id, device_id))


async def test_a_big_insert_is_checked_whole(jobs: JobSystem, db: Db) -> None:
    """One bad row among 200 fails the whole statement, whichever plan the check runs."""
    await add_worker(jobs, "w1", 200)
    job = (await jobs.create_job(target_url="https://example.com", duration_sec=5, target_type="device_count",
                                 target_value=1)).job
    before = db.value("select count(*) from jobsys.job_assignments")
    others = "select id from jobsys.devices d where not exists (select 1 from jobsys.job_assignments a where a.device_id = d.id)"
    with pytest.raises(psycopg.errors.ForeignKeyViolation, match="device_id"):
        db.run(f"insert into jobsys.job_assignments (job_id, device_id) select %s, id from ({others}) o "
               "union all select %s, gen_random_uuid()", (job.id, job.id))
    with pytest.raises(psycopg.errors.ForeignKeyViolation, match="job_id"):
        db.run(f"insert into jobsys.job_assignments (job_id, device_id) select %s, id from ({others}) o "
               "union all (select gen_random_uuid(), id from jobsys.devices limit 1)", (job.id,))
    db.run(f"insert into jobsys.job_assignments (job_id, device_id) select %s, id from ({others}) o", (job.id,))
    assert db.value("select count(*) from jobsys.job_assignments") == before + 199


async def test_deleting_a_device_deletes_its_assignments(jobs: JobSystem, db: Db) -> None:
    session = await add_worker(jobs, "w1", 2)
    await jobs.create_job(target_url="https://example.com", duration_sec=5)
    db.run("delete from jobsys.devices where id = %s", (session.devices[0].id,))
    assert db.value("select count(*) from jobsys.job_assignments") == 1
    assert db.value(ORPHANS) == 0


async def test_a_device_deleted_during_a_fan_out_leaves_no_orphan(jobs: JobSystem, db: Db) -> None:
    session = await add_worker(jobs, "w1", 3)
    victim = session.devices[0].id
    async with await psycopg.AsyncConnection.connect(db.url) as fan_out:  # one open transaction
        await fan_out.execute("select jobsys.create_job('https://example.com', 5, 'all_devices')")
        async with await psycopg.AsyncConnection.connect(db.url, autocommit=True) as admin:
            delete = asyncio.create_task(admin.execute("delete from jobsys.devices where id = %s", (victim,)))
            await wait_until(lambda: db.value(
                "select count(*) from pg_stat_activity where wait_event_type = 'Lock'"
                " and query ilike 'delete from jobsys.devices%%'") == 1,
                what="the delete waiting for the fan-out to commit")
            await fan_out.commit()
            await asyncio.wait_for(delete, timeout=30)
    assert db.value(ORPHANS) == 0
    assert db.value("select count(*) from jobsys.job_assignments") == 2


async def test_a_device_runs_only_one_of_its_own_assignments(jobs: JobSystem, db: Db) -> None:
    """devices.running_assignment_id names one of the device's own runs: a missing run or
    another device's is refused (23503), on insert and on update, one bad row failing the
    whole statement; a claim, which sets it for many devices at once, passes."""
    session = await add_worker(jobs, "w1", 3)
    await jobs.create_job(target_url="https://example.com", duration_sec=5, target_type="all_devices")
    first, second, third = (d.id for d in session.devices)
    run_of = {device: db.value("select id from jobsys.job_assignments where device_id = %s", (device,))
              for device in (first, second, third)}
    missing = db.value("select max(id) + 1000 from jobsys.job_assignments")
    for bad in (missing, run_of[second]):
        with pytest.raises(psycopg.errors.ForeignKeyViolation, match="running_assignment_id"):
            db.run("update jobsys.devices set running_assignment_id = case id when %s then %s else %s end "
                   "where id in (%s, %s)", (first, run_of[first], bad, first, third))
    with pytest.raises(psycopg.errors.ForeignKeyViolation, match="running_assignment_id"):
        db.run("insert into jobsys.devices (serial, running_assignment_id) values ('w1-new', %s)", (run_of[first],))
    assert db.value("select count(*) from jobsys.devices where running_assignment_id is not null") == 0

    claimed = await jobs.claim_assignments(session.worker_id)
    assert {(c.device_id, c.assignment_id) for c in claimed} == set(run_of.items())
    assert db.value("select count(*) from jobsys.devices where running_assignment_id is not null") == 3
