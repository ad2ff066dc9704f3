"""Devices page and the header's live device count."""

from __future__ import annotations

from nicegui.testing import User

from jobsys.system import JobSystem
from tests.core.helpers import add_worker
from tests.dashboard.pages import finish_runs, login
from tests.support.pages import element, texts
from tests.support.postgres import Db
from tests.support.waiting import wait_until


async def test_header_count_follows_devices_coming_and_going(user: User, jobs: JobSystem, db: Db) -> None:
    await login(user, language="en")
    assert element(user, "connected-count").text == "0 devices connected"
    first = await add_worker(jobs, "rack-1", 4)
    await wait_until(
        lambda: element(user, "connected-count").text == "4 devices connected", what="4 connected"
    )
    await add_worker(jobs, "rack-2", 2)
    await wait_until(
        lambda: element(user, "connected-count").text == "6 devices connected", what="6 connected"
    )
    await jobs.stop_worker(first.worker_id)
    await wait_until(
        lambda: element(user, "connected-count").text == "2 devices connected", what="2 connected"
    )
    # A device whose heartbeat went stale is marked offline by maintenance, which says so by push.
    db.run(
        "update jobsys.devices set last_heartbeat_at = now() - interval '1 hour' where serial = 'rack-2-000'"
    )
    await jobs.mark_stale()
    await wait_until(
        lambda: element(user, "connected-count").text == "1 devices connected", what="1 connected"
    )


async def test_devices_grouped_by_worker_with_state_job_and_badge(
    user: User, jobs: JobSystem, db: Db
) -> None:
    db.setting("progress_event_interval_ms", 0)  # the run starting is pushed at once
    rack1 = await add_worker(jobs, "rack-1", 2)
    rack2 = await add_worker(jobs, "rack-2", 1, state="error")
    await login(user, "/devices")
    await user.should_see("워커 rack-1")
    await user.should_see("워커 rack-2")
    with user.scope(marker=f"worker-{rack1.worker_id}"):
        await user.should_see(marker="device-rack-1-000")
        await user.should_see(marker="device-rack-1-001")
        await user.should_not_see(marker="device-rack-2-000")
        await user.should_see("대기")
    with user.scope(marker=f"worker-{rack2.worker_id}"):
        await user.should_see("오류")
    with user.scope(marker="device-rack-1-000"):
        await user.should_see("시뮬레이션")  # simulated devices are always labelled
        await user.should_see("마지막 응답:")

    job = (
        await jobs.create_job(
            target_url="https://example.com", duration_sec=5, target_type="device_count", target_value=1
        )
    ).job
    await finish_runs(jobs, rack1.worker_id, running=1)
    busy = next(a.serial for a in (await jobs.get_job(job.id)).assignments)
    await wait_until(
        lambda: f"현재 작업: {str(job.id)[:8]}" in texts(user, f"device-{busy}"), what="busy device"
    )
    assert "작업중" in texts(user, f"device-{busy}")
