"""Fleet management on a real worker and real Postgres with simulated phones: the labels a
worker reports (and jobs target), vitals that keep a low or hot phone out until it
recovers, and an operator's reboot: pushed or polled, handled once, answered with the
reason when it fails."""

from __future__ import annotations

import logging
import pathlib
import uuid
from collections.abc import Iterator

import pytest

from jobsys.events import Event, EventName
from jobsys.models import JobStatus
from jobsys.system import JobSystem
from tests.support.postgres import Db
from tests.support.runners import WorkerPool, until_ready
from tests.support.waiting import wait_until
from tests.worker.adb_double import NO_PERMISSIONS, AdbDouble, PhoneDouble, with_u2_jar
from tests.worker.conftest import StartWorker
from worker.agent import Worker
from worker.drivers.base import DeviceError, DeviceHealth
from worker.drivers.sim import SimDriver, SimVitalsModel
from worker.drivers.uiautomator2_driver import Uiautomator2Driver
from worker.options import WorkerOptions

NEVER_BACK = float("inf")  # a simulated reboot that never ends, until the test brings the phone back
REBOOT_EVENTS = ("reboot_requested", "rebooted", "reboot_failed")


def device_id(db: Db, serial: str) -> uuid.UUID:
    return uuid.UUID(str(db.value("select id from jobsys.devices where serial = %s", (serial,))))


def state(db: Db, serial: str) -> str:
    return str(db.value("select state from jobsys.devices where serial = %s", (serial,)))


def reboot_events(db: Db, serial: str) -> list[tuple[str, str | None]]:
    return [(row[0], row[1]) for row in db.rows(
        "select e.event, e.detail from jobsys.device_events e join jobsys.devices d on d.id = e.device_id"
        " where d.serial = %s and e.event = any(%s) order by e.id", (serial, list(REBOOT_EVENTS)))]


def answered(db: Db, serial: str) -> bool:
    return bool(db.value("select reboot_requested_at is null from jobsys.devices where serial = %s", (serial,)))


async def all_online(db: Db, count: int) -> None:
    await wait_until(lambda: db.value("select count(*) from jobsys.devices where state = 'online'") == count,
                     what=f"{count} devices online")


async def job_done(jobs: JobSystem, job_id: uuid.UUID) -> bool:
    return (await jobs.get_job(job_id)).status is JobStatus.COMPLETED


# --- labels -------------------------------------------------------------------------------------


async def test_the_labels_a_worker_reports_reach_the_server_and_a_job_targets_one_pc(
        jobs: JobSystem, db: Db, start_worker: StartWorker) -> None:
    await start_worker("pc-a", devices=2)
    await start_worker("pc-b", devices=2)
    await all_online(db, 4)
    labels = db.value("select labels from jobsys.devices where serial = 'sim-pc-b-001'")
    assert {k: labels[k] for k in ("pc", "manufacturer", "model", "android_version", "sdk", "abi")} == {
        "pc": "pc-b", "manufacturer": "jobsys", "model": "Simulated", "android_version": "14", "sdk": "34",
        "abi": "x86_64"}

    created = await jobs.create_job(target_url="https://example.com/b", duration_sec=1,
                                    device_labels={"pc": "pc-b", "android_version": "14"})

    assert created.assigned == 2
    await wait_until(lambda: job_done(jobs, created.job.id), what="the job on pc-b")
    assert {a.serial for a in (await jobs.get_job(created.job.id)).assignments} == {"sim-pc-b-001", "sim-pc-b-002"}


# --- vitals -------------------------------------------------------------------------------------


async def test_a_low_or_hot_phone_is_reported_kept_out_of_work_and_let_back_when_it_recovers(
        jobs: JobSystem, db: Db, start_worker: StartWorker) -> None:
    # No charging or cooling on its own: the test says when the phone recovers.
    driver = SimDriver(count=3, name_seed="w1", speed=50, vitals=SimVitalsModel(charge_pct_per_s=0.0,
                                                                               cool_c_per_s=0.0))
    await start_worker(devices=3, driver=driver, vitals_interval_s=0.0, vitals_report_s=0.0)
    low, hot, fine = driver.serials
    await all_online(db, 3)

    driver.set_vitals(low, battery_pct=9.0)
    driver.set_vitals(hot, temperature_c=47.5)
    await wait_until(lambda: (state(db, low), state(db, hot)) == ("low_battery", "overheated"),
                     what="the low and the hot phone reported")
    vitals = db.value("select vitals from jobsys.devices where serial = %s", (hot,))
    assert vitals["temperature_c"] == 47.5 and vitals["charging"] is True and vitals["screen_on"] is False
    created = await jobs.create_job(target_url="https://example.com/", duration_sec=1)
    assert created.assigned == 1  # only the fine phone
    await wait_until(lambda: job_done(jobs, created.job.id), what="the job on the fine phone")
    assert [a.serial for a in (await jobs.get_job(created.job.id)).assignments] == [fine]

    driver.set_vitals(low, battery_pct=60.0)
    driver.set_vitals(hot, temperature_c=36.0)
    await all_online(db, 3)


# --- reboot -------------------------------------------------------------------------------------


async def test_an_operators_reboot_is_pushed_done_and_answered_and_the_phone_serves_again(
        jobs: JobSystem, db: Db, start_worker: StartWorker) -> None:
    driver = SimDriver(count=2, name_seed="w1", speed=50, reboot_s=NEVER_BACK)
    worker = await start_worker(devices=2, driver=driver, reboot_poll_s=0.05)
    serial = driver.serials[0]
    await all_online(db, 2)

    await jobs.request_device_reboot(device_id(db, serial))

    await wait_until(lambda: driver.reboots == [serial], what="the phone rebooted")
    await wait_until(lambda: db.value("select labels ->> 'reboot' from jobsys.devices where serial = %s",
                                      (serial,)) == "in progress", what="reported as rebooting")
    assert state(db, serial) == "offline" and not answered(db, serial)
    for _ in range(3):  # heartbeats list the request while it is pending: it is not done again
        await worker.heartbeat_once()
    assert driver.reboots == [serial]

    driver.set_health(serial, DeviceHealth.ONLINE)  # the phone is back
    await wait_until(lambda: answered(db, serial), what="the answer")
    assert reboot_events(db, serial) == [("reboot_requested", None), ("rebooted", None)]
    assert db.value("select rebooted_at is not null from jobsys.devices where serial = %s", (serial,))
    await all_online(db, 2)
    created = await jobs.create_job(target_url="https://example.com/after", duration_sec=1)
    assert created.assigned == 2
    await wait_until(lambda: job_done(jobs, created.job.id), what="a job on both phones")
    assert driver.reboots == [serial] and not worker.reboots


async def test_without_push_the_heartbeat_brings_the_request_and_it_is_done_once(
        jobs: JobSystem, db: Db, start_worker: StartWorker) -> None:
    driver = SimDriver(count=1, name_seed="w1", speed=50, reboot_s=5.0)  # 0.1 s
    worker = await start_worker(devices=1, driver=driver, push=False, reboot_poll_s=0.05)
    [serial] = driver.serials
    await all_online(db, 1)

    await jobs.request_device_reboot(device_id(db, serial))

    await wait_until(lambda: answered(db, serial), what="the answer")
    for _ in range(3):
        await worker.heartbeat_once()
    assert driver.reboots == [serial]
    assert reboot_events(db, serial) == [("reboot_requested", None), ("rebooted", None)]
    await all_online(db, 1)


async def test_a_phone_that_does_not_come_back_in_time_is_answered_with_why_and_rejoins_later(
        jobs: JobSystem, db: Db, start_worker: StartWorker) -> None:
    driver = SimDriver(count=1, name_seed="w1", speed=50, reboot_s=NEVER_BACK)
    await start_worker(devices=1, driver=driver, reboot_poll_s=0.05, reboot_timeout_s=0.5)
    [serial] = driver.serials
    await all_online(db, 1)

    await jobs.request_device_reboot(device_id(db, serial))

    await wait_until(lambda: answered(db, serial), what="the answer")
    [_, (event, detail)] = reboot_events(db, serial)
    assert event == "reboot_failed" and "did not come back within" in (detail or "")
    driver.set_health(serial, DeviceHealth.ONLINE)  # it turns up after all: probed as any phone
    await all_online(db, 1)


class RefusingSim(SimDriver):
    async def reboot(self, serial: str) -> None:
        raise DeviceError(f"{serial}: reboot failed: AdbError: closed")


async def test_a_reboot_the_phone_refuses_is_answered_with_why_and_the_phone_keeps_serving(
        jobs: JobSystem, db: Db, start_worker: StartWorker) -> None:
    driver = RefusingSim(count=1, name_seed="w1", speed=50)
    await start_worker(devices=1, driver=driver, reboot_poll_s=0.05)
    [serial] = driver.serials
    await all_online(db, 1)

    await jobs.request_device_reboot(device_id(db, serial))

    await wait_until(lambda: answered(db, serial), what="the answer")
    [_, (event, detail)] = reboot_events(db, serial)
    assert event == "reboot_failed" and "did not reboot" in (detail or "") and "AdbError" in (detail or "")
    await all_online(db, 1)
    created = await jobs.create_job(target_url="https://example.com/", duration_sec=1)
    await wait_until(lambda: job_done(jobs, created.job.id), what="a job on it")


async def test_a_request_for_a_phone_with_a_run_on_it_is_skipped(
        jobs: JobSystem, db: Db, start_worker: StartWorker, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="jobsys.worker")
    driver = SimDriver(count=1, name_seed="w1", speed=1)
    # a short grace: the 60 s run is still going when the test ends
    worker = await start_worker(devices=1, driver=driver, speed=1, shutdown_grace_s=0.2)
    [serial] = driver.serials
    await all_online(db, 1)
    await jobs.create_job(target_url="https://example.com/", duration_sec=60)
    await wait_until(lambda: len(worker.runs) == 1, what="the run")

    # The server refuses reboots of busy phones; one that crossed a claim on the way is skipped.
    worker._on_event(Event(topic="t", event=EventName.DEVICE_REBOOT.value,
                           payload={"device_id": str(device_id(db, serial)), "serial": serial}))
    await wait_until(lambda: not worker.reboots, what="the request handled")

    assert driver.reboots == [] and len(worker.runs) == 1
    assert any("device_reboot_skipped" in r.getMessage() for r in caplog.records)


# --- real phones (the adb double behind the real uiautomator2 driver) ----------------------------------


@pytest.fixture
def adb() -> Iterator[AdbDouble]:
    double = AdbDouble().start()
    try:
        yield double
    finally:
        double.stop()


async def test_phones_report_labels_vitals_and_adb_state_and_a_reboot_waits_for_the_boot_to_complete(
        jobs: JobSystem, db: Db, adb: AdbDouble, db_url: str, tmp_path: pathlib.Path) -> None:
    phone = adb.add(with_u2_jar(PhoneDouble("R58M1", usb="1-1", battery_level=64, battery_tenths_c=352)))
    adb.add(PhoneDouble("R58M2", usb="1-2", state=NO_PERMISSIONS))
    adb.add(PhoneDouble("R58M3", usb="1-3", state="unauthorized"))
    pool = WorkerPool()
    worker_jobs = await JobSystem.connect(db_url)
    options = WorkerOptions(name="pc-1", evidence_dir=tmp_path / "evidence", driver="uiautomator2",
                            heartbeat_interval_s=0.5, poll_interval_s=0.2, safety_poll_s=30.0, shutdown_grace_s=5.0,
                            reboot_poll_s=0.05)
    worker = Worker(worker_jobs, options, driver=Uiautomator2Driver(adb_port=adb.port, step_s=0.1))
    task = pool.run(worker, worker_jobs)
    try:
        await until_ready(task, worker.registered.is_set, "worker registered")
        await wait_until(lambda: state(db, "R58M1") == "online", timeout_s=30, what="the phone probed")
        row = db.rows("select labels, vitals from jobsys.devices where serial = 'R58M1'")[0]
        assert {k: row[0][k] for k in ("pc", "manufacturer", "model", "android_version", "sdk", "abi")} == {
            "pc": "pc-1", "manufacturer": "Google", "model": "Pixel_7", "android_version": "14", "sdk": "34",
            "abi": "arm64-v8a"}
        assert row[1] == {"battery_pct": 64, "charging": True, "temperature_c": 35.2, "screen_on": True,
                          "adb_state": "device"}
        adb_states = dict(db.rows("select serial, vitals ->> 'adb_state' from jobsys.devices"
                                  " where state = 'unauthorized'"))
        assert adb_states == {"R58M2": "no permissions", "R58M3": "unauthorized"}

        await jobs.request_device_reboot(device_id(db, "R58M1"))
        await wait_until(lambda: phone.reboots == 1 and state(db, "R58M1") == "offline", what="rebooting")
        # A real phone stays away for many seconds; this one until the worker has seen it gone.
        await wait_until(lambda: worker.fleet.gone_since_reboot("R58M1"), what="seen gone")
        adb.boot(phone, completed=False)  # adb lists it again before Android has finished booting
        await wait_until(lambda: len(phone.ran("getprop")) > 3, what="probed while booting")
        assert not answered(db, "R58M1") and phone.u2_launches == 1  # not connected to a booting phone
        phone.booted = True
        await wait_until(lambda: answered(db, "R58M1"), timeout_s=30, what="the answer")
        assert reboot_events(db, "R58M1")[-1] == ("rebooted", None)
        assert state(db, "R58M1") == "online" and phone.u2_launches == 2
    finally:
        await pool.stop_all()


async def test_a_worker_stopping_during_a_reboot_answers_why(
        jobs: JobSystem, db: Db, start_worker: StartWorker) -> None:
    driver = SimDriver(count=1, name_seed="w1", speed=50, reboot_s=NEVER_BACK)
    worker = await start_worker(devices=1, driver=driver, reboot_poll_s=0.05)
    [serial] = driver.serials
    await all_online(db, 1)
    await jobs.request_device_reboot(device_id(db, serial))
    await wait_until(lambda: driver.reboots == [serial], what="the phone rebooting")

    worker.request_stop()

    await wait_until(lambda: answered(db, serial), what="the answer")
    assert reboot_events(db, serial)[-1] == ("reboot_failed", "the worker stopped before the phone came back")


# --- disable stops the run now -------------------------------------------------------------------


async def test_disabling_a_busy_phone_stops_its_run_by_push(jobs: JobSystem, db: Db, start_worker: StartWorker) -> None:
    # Heartbeats an hour apart: only the run_stopped push can stop the run within the wait.
    worker = await start_worker("pc-a", devices=1, speed=1.0, heartbeat_interval_s=3600.0)
    await all_online(db, 1)
    created = await jobs.create_job(target_url="https://example.com/long", duration_sec=3600)
    await wait_until(lambda: bool(worker.runs), what="the run started")
    await jobs.set_device_state(device_id(db, "sim-pc-a-001"), "disabled")
    await wait_until(lambda: not worker.runs, what="the worker stopped the run")
    job = await jobs.get_job(created.job.id)
    assert (job.running_count, job.completed_count, job.failed_count) == (0, 0, 0)
