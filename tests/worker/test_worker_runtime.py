"""The worker in-process on real Postgres with simulated devices (time compressed)."""

from __future__ import annotations

import pathlib
import uuid

from jobsys.models import JobStatus
from jobsys.system import JobSystem
from tests.support.postgres import Db
from tests.support.waiting import wait_until
from tests.worker.conftest import StartWorker
from worker.drivers.base import DeviceHealth
from worker.drivers.sim import SimDriver


async def _job_done(jobs: JobSystem, job_id: uuid.UUID) -> bool:
    return (await jobs.get_job(job_id)).status is JobStatus.COMPLETED


async def test_a_job_to_all_twenty_devices_completes_with_exact_counters(
        jobs: JobSystem, db: Db, start_worker: StartWorker, tmp_path: pathlib.Path) -> None:
    await start_worker(devices=20)
    created = await jobs.create_job(target_url="https://example.com/health", duration_sec=2)
    assert created.assigned == 20
    await wait_until(lambda: _job_done(jobs, created.job.id), what="job completed")
    detail = await jobs.get_job(created.job.id)
    assert (detail.completed_count, detail.failed_count, detail.running_count) == (20, 0, 0)
    assert db.counters_match() == []
    first = detail.assignments[0].result or {}
    assert first["simulated"] is True and first["foreground_package"] == "sim.browser"
    assert pathlib.Path(first["evidence_path"]).is_file()
    assert first["elapsed_sec"] >= 2


async def test_percentage_and_count_jobs_choose_the_right_number(jobs: JobSystem, start_worker: StartWorker) -> None:
    await start_worker(devices=20)
    by_percent = await jobs.create_job(target_url="https://example.com/a", duration_sec=1,
                                       target_type="percentage", target_value=30)
    by_count = await jobs.create_job(target_url="https://example.com/b", duration_sec=1,
                                     target_type="device_count", target_value=7)
    await wait_until(lambda: _job_done(jobs, by_percent.job.id), what="percentage job")
    await wait_until(lambda: _job_done(jobs, by_count.job.id), what="count job")
    assert (await jobs.get_job(by_percent.job.id)).completed_count == 6
    assert (await jobs.get_job(by_count.job.id)).completed_count == 7


async def test_without_push_the_job_completes_by_polling(jobs: JobSystem, start_worker: StartWorker) -> None:
    worker = await start_worker(devices=5, push=False)
    created = await jobs.create_job(target_url="https://example.com", duration_sec=1)
    await wait_until(lambda: _job_done(jobs, created.job.id), what="job completed by polling")
    assert worker.push_state.value == "DISCONNECTED"


async def test_a_killed_listen_connection_reconnects_and_work_continues(
        jobs: JobSystem, db: Db, start_worker: StartWorker) -> None:
    worker = await start_worker(devices=5)
    db.run("select pg_terminate_backend(pid) from pg_stat_activity where query ilike 'listen%%'"
           " or (query = 'select 1' and datname = current_database() and pid <> pg_backend_pid())")
    created = await jobs.create_job(target_url="https://example.com", duration_sec=1)
    await wait_until(lambda: _job_done(jobs, created.job.id), what="job completed after the cut")
    await wait_until(lambda: worker.push_state.value == "SUBSCRIBED", what="push back")


async def test_pause_holds_queued_runs_and_resume_completes(
        jobs: JobSystem, db: Db, start_worker: StartWorker) -> None:
    worker = await start_worker(devices=4, speed=10)
    first = await jobs.create_job(target_url="https://example.com/first", duration_sec=3)
    second = await jobs.create_job(target_url="https://example.com/second", duration_sec=1)
    await wait_until(lambda: len(worker.runs) == 4, what="first job running on all devices")
    await jobs.pause_job(second.job.id)  # its runs are queued behind the first job's
    await wait_until(lambda: second.job.id in worker.paused_jobs, what="pause reached the worker")
    await wait_until(lambda: _job_done(jobs, first.job.id), what="first job done")
    await wait_until(lambda: not worker.runs, what="devices idle")
    await worker.heartbeat_once()  # one more round trip: nothing may start now
    assert db.value("select count(*) from jobsys.job_assignments where job_id = %s"
                    " and (started_at is not null or status <> 'paused')", (second.job.id,)) == 0
    await jobs.resume_job(second.job.id)
    await wait_until(lambda: _job_done(jobs, second.job.id), what="second job done after resume")
    assert db.counters_match() == []


async def test_cancel_stops_running_runs_within_a_second(
        jobs: JobSystem, db: Db, start_worker: StartWorker) -> None:
    worker = await start_worker(devices=3, speed=1)  # real time: a 60 s run, stopped after cancel
    created = await jobs.create_job(target_url="https://example.com", duration_sec=60)
    await wait_until(lambda: len(worker.runs) == 3, what="runs started")
    await jobs.cancel_job(created.job.id)
    await wait_until(lambda: not worker.runs, timeout_s=5, what="runs stopped")
    detail = await jobs.get_job(created.job.id)
    assert detail.status is JobStatus.CANCELLED
    assert {a.status.value for a in detail.assignments} == {"cancelled"}
    assert db.counters_match() == []


async def test_delete_stops_running_runs(jobs: JobSystem, start_worker: StartWorker) -> None:
    worker = await start_worker(devices=2, speed=1)
    created = await jobs.create_job(target_url="https://example.com", duration_sec=60)
    await wait_until(lambda: len(worker.runs) == 2, what="runs started")
    await jobs.delete_job(created.job.id)
    await wait_until(lambda: not worker.runs, timeout_s=5, what="runs stopped")


async def test_a_failing_device_is_marked_unhealthy_and_top_up_moves_the_run(
        jobs: JobSystem, db: Db, start_worker: StartWorker, tmp_path: pathlib.Path) -> None:
    driver = SimDriver(count=3, name_seed="w1", speed=50)
    await start_worker(devices=3, driver=driver)
    created = await jobs.create_job(target_url="https://example.com", duration_sec=1,
                                    target_type="device_count", target_value=2)
    await wait_until(lambda: _job_done(jobs, created.job.id), what="first job")
    broken = driver.serials[0]
    driver.set_health(broken, DeviceHealth.ERROR)
    await wait_until(lambda: db.value("select state from jobsys.devices where serial = %s", (broken,)) == "error",
                     what="error state reported")
    job = await jobs.create_job(target_url="https://example.com/2", duration_sec=1)
    assert job.job.target_count == 2  # the device in error is not counted as healthy
    await wait_until(lambda: _job_done(jobs, job.job.id), what="second job")
    serials = {a.serial for a in (await jobs.get_job(job.job.id)).assignments}
    assert broken not in serials


async def test_new_devices_are_registered_and_get_topped_up_work(
        jobs: JobSystem, start_worker: StartWorker) -> None:
    driver = SimDriver(count=2, name_seed="w1", speed=50)
    await start_worker(devices=2, driver=driver)
    created = await jobs.create_job(target_url="https://example.com", duration_sec=1,
                                    target_type="device_count", target_value=4)
    assert created.assigned == 2
    driver.add_devices(2)
    await wait_until(lambda: _job_done(jobs, created.job.id), what="job completed on the new devices")
    assert len({a.serial for a in (await jobs.get_job(created.job.id)).assignments}) == 4


async def test_a_device_fault_mid_run_fails_the_run_until_the_probe_passes(
        jobs: JobSystem, db: Db, start_worker: StartWorker) -> None:
    driver = SimDriver(count=1, name_seed="w1", speed=1)
    worker = await start_worker(devices=1, driver=driver)
    created = await jobs.create_job(target_url="https://example.com", duration_sec=60)
    await wait_until(lambda: len(worker.runs) == 1, what="run started")
    [serial] = driver.serials
    driver.set_health(serial, DeviceHealth.ERROR)
    await wait_until(lambda: db.value("select status from jobsys.job_assignments") == "failed",
                     what="run failed")
    [assignment] = (await jobs.get_job(created.job.id)).assignments
    assert "simulated device" in (assignment.error or "") and "error" in (assignment.error or "")
    await wait_until(lambda: db.value("select state from jobsys.devices") == "error", what="device unhealthy")
    driver.set_health(serial, DeviceHealth.ONLINE)
    await wait_until(lambda: db.value("select state from jobsys.devices") == "online", what="probe passed")


async def test_a_worker_registered_again_listens_on_its_new_sessions_topic(
        jobs: JobSystem, db: Db, start_worker: StartWorker) -> None:
    worker = await start_worker(devices=3)
    first = worker.worker_id
    db.run("delete from jobsys.workers where id = %s", (first,))  # the server forgot the session
    await wait_until(lambda: worker.worker_id != first and worker.push_state.value == "SUBSCRIBED",
                     what="registered again and subscribed")
    # Only push wakes the claim before the 30 s safety poll: on the old topic nothing would.
    created = await jobs.create_job(target_url="https://example.com/again", duration_sec=1)
    await wait_until(lambda: _job_done(jobs, created.job.id), what="job pushed to the new session")
