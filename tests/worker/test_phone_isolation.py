"""A hung phone beside a healthy one, on a real worker and real Postgres.

The phones are the adb double's (tests/worker/adb_double.py); the worker runs the real
uiautomator2 driver (real adbutils, real uiautomator2.connect) against it. A hung phone's
call blocks on an Event the test never sets (the double releases it at teardown), so
"promptly" below means "while the hung call is still blocked", not a time limit.
"""

from __future__ import annotations

import asyncio
import pathlib
import signal
import subprocess
import uuid
from typing import Any, AsyncIterator, Awaitable, Callable, Iterator

import pytest

from jobsys.models import JobStatus
from jobsys.system import JobSystem
from tests.support.postgres import Db
from tests.support.processes import JOBSYS
from tests.support.runners import WorkerPool, until_ready
from tests.support.waiting import wait_until
from tests.worker.adb_double import AdbDouble, PhoneDouble, with_u2_jar
from worker.agent import Worker
from worker.drivers.uiautomator2_driver import Uiautomator2Driver
from worker.options import WorkerOptions

HUNG, GOOD = "HUNGPHONE01", "GOODPHONE01"
STEP_S = 0.1  # the driver's step: real time here
STUCK_CALL_TIMEOUT_S = 3600.0  # the hung call is never given up by timeout during the test
RUN_CALL_TIMEOUT_S = 1.0  # a run's call on the hung phone is given up after this: the phone goes into error
PROCESS_EXIT_TIMEOUT_S = 20.0  # below the CLI's 30 s call timeout: exiting by then is not waiting on it

StartWorker = Callable[..., Awaitable[tuple[Worker, "asyncio.Task[None]"]]]


@pytest.fixture
def adb() -> Iterator[AdbDouble]:
    double = AdbDouble().start()
    try:
        yield double
    finally:
        double.stop()


@pytest.fixture
def phones(adb: AdbDouble) -> tuple[PhoneDouble, PhoneDouble]:
    return (adb.add(with_u2_jar(PhoneDouble(HUNG, usb="1-1"))),
            adb.add(with_u2_jar(PhoneDouble(GOOD, usb="1-2"))))


@pytest.fixture
async def start(db_url: str, tmp_path: pathlib.Path, adb: AdbDouble) -> AsyncIterator[StartWorker]:
    pool = WorkerPool()

    async def start_worker(grace_s: float = 5.0, call_timeout_s: float = STUCK_CALL_TIMEOUT_S,
                           ) -> tuple[Worker, asyncio.Task[None]]:
        jobs = await JobSystem.connect(db_url)
        options = WorkerOptions(name="phones", evidence_dir=tmp_path / "evidence", driver="uiautomator2",
                                heartbeat_interval_s=0.5, poll_interval_s=0.2, safety_poll_s=30.0,
                                shutdown_grace_s=grace_s)
        driver = Uiautomator2Driver(adb_port=adb.port, step_s=STEP_S, call_timeout_s=call_timeout_s,
                                    connect_timeout_s=STUCK_CALL_TIMEOUT_S)
        worker = Worker(jobs, options, driver=driver)
        task = pool.run(worker, jobs)
        await until_ready(task, worker.registered.is_set, "worker registered")
        return worker, task

    yield start_worker
    await pool.stop_all()


def count_heartbeats(worker: Worker, adb: AdbDouble) -> list[int]:
    """Heartbeats sent while a phone call was hung: a list that grows by one per such heartbeat."""
    during_hang: list[int] = []
    send = worker.jobs.heartbeat

    async def heartbeat(*args: Any, **kwargs: Any) -> Any:
        if adb.hung_now:
            during_hang.append(1)
        return await send(*args, **kwargs)

    worker.jobs.heartbeat = heartbeat  # type: ignore[method-assign]
    return during_hang


async def both_online(db: Db) -> None:
    await wait_until(lambda: db.value("select count(*) from jobsys.devices where state = 'online'") == 2,
                     timeout_s=30, what="both phones probed and online")


async def test_a_hung_phone_never_delays_the_healthy_phone_or_a_heartbeat(
        jobs: JobSystem, db: Db, adb: AdbDouble, phones: tuple[PhoneDouble, PhoneDouble],
        start: StartWorker) -> None:
    hung, good = phones
    worker, _ = await start(call_timeout_s=RUN_CALL_TIMEOUT_S)
    await both_online(db)
    hung.hang_all = True  # from now on this phone answers nothing: a run's call times out, the
    heartbeats = count_heartbeats(worker, adb)  # phone goes into error and its probes are due

    first = await jobs.create_job(target_url="https://example.com/both", duration_sec=1)
    await wait_until(lambda: db.value("select state from jobsys.devices where serial = %s", (HUNG,)) == "error",
                     timeout_s=30, what="the hung phone reported in error")
    done: list[uuid.UUID] = []
    for n in range(3):  # the healthy phone keeps working
        created = await jobs.create_job(target_url=f"https://example.com/{n}", duration_sec=1,
                                        target_type="device_count", target_value=1)
        await wait_until(lambda: _status(db, created.job.id) == "completed", timeout_s=30, what=f"job {n}")
        done.append(created.job.id)
    await wait_until(lambda: len(heartbeats) >= 5, timeout_s=30, what="heartbeats while the phone is hung")

    assert adb.hung_now >= 1  # all of that happened while the hung phone's call was still blocked
    assert db.value("select state from jobsys.devices where serial = %s", (GOOD,)) == "online"
    reason = worker.fleet.error_reason(HUNG) or ""  # its probes failed on their own timeouts
    assert "timed out" in reason or "not answering" in reason
    for job_id in done:
        detail = await jobs.get_job(job_id)
        assert [(a.serial, a.attempt) for a in detail.assignments] == [(GOOD, 1)]  # never re-run
    detail = await jobs.get_job(first.job.id)
    runs = {a.serial: (a.status.value, a.attempt) for a in detail.assignments}
    assert runs == {GOOD: ("completed", 1), HUNG: ("failed", 1)}
    assert len(good.ran("am start")) == 4


async def test_stop_with_a_run_stuck_on_a_hung_phone_ends_promptly_and_releases_it(
        jobs: JobSystem, db: Db, adb: AdbDouble, phones: tuple[PhoneDouble, PhoneDouble],
        start: StartWorker) -> None:
    hung, _ = phones
    worker, task = await start(grace_s=0.2)
    await both_online(db)
    hung.hang.add("dumpsys window")
    created = await jobs.create_job(target_url="https://example.com/", duration_sec=60)
    await wait_until(lambda: adb.hung_now == 1, timeout_s=30, what="a run stuck in a call")

    worker.request_stop()
    await wait_until(task.done, timeout_s=30, what="the worker to stop")

    task.result()
    assert adb.hung_now == 1  # it stopped without waiting for the hung call
    detail = await jobs.get_job(created.job.id)
    assert detail.running_count == 0  # both runs handed back, the stuck one too
    assert db.value("select count(*) from jobsys.devices where state = 'online'") == 0


async def test_sigterm_with_a_hung_phone_exits_promptly(
        jobs: JobSystem, db: Db, db_url: str, adb: AdbDouble, phones: tuple[PhoneDouble, PhoneDouble],
        tmp_path: pathlib.Path, procs: list[subprocess.Popen[str]]) -> None:
    hung, _ = phones
    log = tmp_path / "phones.log"
    with open(log, "a") as out:
        procs.append(subprocess.Popen(
            [*JOBSYS, "worker", "--database-url", db_url, "--driver", "uiautomator2", "--name", "phones",
             "--adb-port", str(adb.port), "--heartbeat-interval", "0.5", "--poll-interval", "0.2",
             "--grace", "0.5", "--evidence-dir", str(tmp_path / "evidence")],
            stdout=out, stderr=subprocess.STDOUT, text=True))
    await both_online(db)
    hung.hang.add("dumpsys window")
    created = await jobs.create_job(target_url="https://example.com/", duration_sec=60)
    await wait_until(lambda: adb.hung_now == 1, timeout_s=30, what="a run stuck in a call")

    procs[0].send_signal(signal.SIGTERM)
    assert await asyncio.to_thread(procs[0].wait, PROCESS_EXIT_TIMEOUT_S) == 0

    assert adb.hung_now == 1  # the process ended while its call was still blocked
    assert "worker_stopped" in log.read_text()
    assert (await jobs.get_job(created.job.id)).running_count == 0
    assert (await jobs.get_job(created.job.id)).status is not JobStatus.COMPLETED


def _status(db: Db, job_id: uuid.UUID) -> str:
    return str(db.value("select status from jobsys.jobs where id = %s", (job_id,)))
