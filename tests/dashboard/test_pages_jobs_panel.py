"""The side panel of a job (issue 20): settings, timeline with the end in words, the
per-device table (device, PC, status, attempt, times, error), its actions and exports; it
follows live events while open and holds nothing once closed."""

from __future__ import annotations

import json

from nicegui.testing import User

from jobsys.models import EndReason, JobStatus
from jobsys.system import JobSystem
from nicegui_app.pages.rows import when
from tests.core.helpers import add_worker
from tests.dashboard.pages import finish_runs, login
from tests.support.pages import element, text_of, texts
from tests.support.waiting import wait_until

URL = "https://example.com/watch"


def _is_open(user: User) -> bool:
    return "hidden" not in element(user, "job-panel").classes  # CSS hides it: the simulated user sees no CSS


async def test_settings_timeline_and_devices_of_a_cancelled_job(user: User, jobs: JobSystem) -> None:
    session = await add_worker(jobs, "w1", 3)
    job = (await jobs.create_job(target_url=URL, duration_sec=30, target_type="device_count", target_value=2,
                                 timeout_sec=600, title="Lobby")).job
    await finish_runs(jobs, session.worker_id, completed=1, failed=1)
    cancelled = await jobs.cancel_job(job.id)
    await login(user, language="en")
    with user.scope(marker=f"job-{job.id}"):
        user.find(marker="open-panel").click()
        await user.should_see(marker="panel-settings", retries=50)
        settings = texts(user, "panel-settings")
        for shown in ("URL", URL, "Display time", "30s", "Target", "2 devices", "Device labels", "none",
                      "Time limit", "10m 0s"):
            assert shown in settings, (shown, settings)
        timeline = texts(user, "panel-timeline")
        assert timeline[:2] == ["Created", when(job.created_at)]
        assert "Ended – cancelled by an operator" in timeline
        assert when(cancelled.ended_at) in timeline
        assert text_of(user, "panel-counts") == "completed 1 / 2, failed 1"
        for run in (await jobs.get_job(job.id)).assignments:  # one line per run, as stored
            row = texts(user, f"assignment-{run.serial}")
            assert row[:4] == [run.serial, "w1", run.status.value.capitalize(), str(run.attempt)], row
            assert row[4:6] == [when(run.started_at), when(run.finished_at)], row
            assert (run.error or "") in row
        assert any(run.error == "screen locked" for run in (await jobs.get_job(job.id)).assignments)
        await user.should_not_see(marker="panel-cancel")  # it has ended
        await user.should_not_see(marker="panel-pause")
    assert _is_open(user)

    with user.scope(marker=f"job-{job.id}"):
        user.find(marker="panel-close").click()
    await wait_until(lambda: not _is_open(user), what="closed")
    await user.should_not_see(marker="panel-settings")  # a closed panel holds nothing
    await user.should_not_see(marker="assignment-w1-000")


async def test_an_incomplete_job_ends_with_its_reason_in_korean(user: User, jobs: JobSystem) -> None:
    session = await add_worker(jobs, "w1", 1)
    job = (await jobs.create_job(target_url=URL, duration_sec=5, target_type="device_count",
                                 target_value=3, topup_grace_sec=0)).job
    await finish_runs(jobs, session.worker_id, completed=1)
    await jobs.maintain(force=True)
    await jobs.maintain(force=True)
    assert (await jobs.get_job(job.id)).end_reason is EndReason.NO_ELIGIBLE_DEVICES
    await login(user)
    with user.scope(marker=f"job-{job.id}"):
        user.find(marker="job-title").click()  # the title opens the panel too
        await user.should_see(marker="panel-timeline", retries=50)
        assert "종료 – 연결된 기기 부족" in texts(user, "panel-timeline")
        assert text_of(user, "panel-counts") == "완료 1 / 3, 실패 0"
        assert "대상" in texts(user, "panel-settings") and "3대" in texts(user, "panel-settings")


async def test_panel_actions_export_and_live_cancel(user: User, jobs: JobSystem) -> None:
    session = await add_worker(jobs, "w1", 2)
    job = (await jobs.create_job(target_url=URL, duration_sec=5, title="Stoppable",
                                 device_labels={})).job
    await finish_runs(jobs, session.worker_id, completed=1)
    await login(user, language="en")
    marker = f"job-{job.id}"
    with user.scope(marker=marker):
        user.find(marker="open-panel").click()
        await user.should_see(marker="panel-export-jsonl", retries=50)
        user.find(marker="panel-export-jsonl").click()
    download = await user.download.next(timeout=5)
    lines = [json.loads(line) for line in download.content.decode("utf-8").splitlines() if line]
    assert sorted(line["device_serial"] for line in lines) == ["w1-000", "w1-001"]

    with user.scope(marker=marker):
        user.find(marker="panel-cancel").click()
    await user.should_see("'Stoppable'", retries=20)  # the one confirmation names the job
    user.find(marker="confirm-cancel-job").click()
    await wait_until(lambda: _status_is(jobs, job.id, JobStatus.CANCELLED), what="cancelled")
    with user.scope(marker=marker):  # the open panel follows: ended, with the reason in words
        await wait_until(lambda: "Ended – cancelled by an operator" in texts(user, "panel-timeline"),
                         what="timeline follows")
        await user.should_not_see(marker="panel-cancel", retries=50)
    assert _is_open(user)


async def _status_is(jobs: JobSystem, job_id: object, status: JobStatus) -> bool:
    return (await jobs.get_job(job_id)).status is status  # type: ignore[arg-type]
