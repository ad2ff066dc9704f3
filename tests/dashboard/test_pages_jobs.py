"""Jobs page: counts per state, live progress from push events (the segmented bar and what it
counts), filter and search, pause/resume and delete from the table, per-device status in the
side panel."""

from __future__ import annotations

from nicegui import ui
from nicegui.testing import User

from jobsys.models import JobStatus
from jobsys.system import JobSystem
from tests.core.helpers import add_worker
from tests.dashboard.pages import finish_runs, login
from tests.support.pages import element, text_of
from tests.support.postgres import Db
from tests.support.waiting import wait_until

URL = "https://example.com/watch"


async def test_progress_updates_live_without_reload(user: User, jobs: JobSystem, db: Db) -> None:
    db.setting("progress_event_interval_ms", 0)  # every change is pushed: the test sees each step
    session = await add_worker(jobs, "w1", 20)
    created = await jobs.create_job(target_url=URL, duration_sec=10, title="Status page")
    await login(user)
    job_marker = f"job-{created.job.id}"
    with user.scope(marker=job_marker):
        await user.should_see("0/20대 (0%)")
    client = user.client

    await finish_runs(jobs, session.worker_id, completed=15, failed=1, running=2)
    with user.scope(marker=job_marker):
        await user.should_see("15/20대 (75%)", retries=50)
        await user.should_see("완료 15 / 20, 실패 1")
        await user.should_see("실행 중 2")
    widths = {key: _width(element(user, f"bar-{key}")) for key in ("completed", "running", "waiting", "failed")}
    assert widths == {"completed": 75.0, "running": 10.0, "waiting": 10.0, "failed": 5.0}
    assert text_of(user, "job-queued") == "2"  # handed to devices, not started
    assert user.client is client  # same page: updated in place, not reloaded


async def test_summary_cards_count_by_status(user: User, jobs: JobSystem) -> None:
    await add_worker(jobs, "w1", 2)
    ids = [(await jobs.create_job(target_url=f"{URL}/{i}", duration_sec=5)).job.id for i in range(4)]
    await jobs.pause_job(ids[0])
    await jobs.cancel_job(ids[1])
    await login(user)
    assert text_of(user, "summary-total-value") == "4"
    assert text_of(user, "summary-active-value") == "2"
    assert text_of(user, "summary-paused-value") == "1"
    assert text_of(user, "summary-completed-value") == "0"
    assert text_of(user, "summary-cancelled-value") == "1"
    for label in ("총 작업", "진행 중", "일시정지", "완료", "취소됨"):
        await user.should_see(label)

    await jobs.pause_job(ids[2])  # from elsewhere: arrives by push
    await wait_until(lambda: text_of(user, "summary-paused-value") == "2", what="paused card")
    assert text_of(user, "summary-active-value") == "1"


async def test_filter_and_search(user: User, jobs: JobSystem) -> None:
    await add_worker(jobs, "w1", 1)
    alpha = (await jobs.create_job(target_url="https://alpha.example/", duration_sec=5)).job
    beta = (await jobs.create_job(target_url="https://beta.example/", duration_sec=5)).job
    await jobs.pause_job(beta.id)
    await login(user, language="en")
    await user.should_see(marker=f"job-{alpha.id}")
    await user.should_see(marker=f"job-{beta.id}")

    status_filter = element(user, "status-filter")
    assert status_filter.options[JobStatus.PAUSED.value] == "Paused"
    status_filter.value = (
        JobStatus.PAUSED.value
    )  # the operator picks "Paused" ("Paused" is also a card label)
    await user.should_not_see(marker=f"job-{alpha.id}", retries=50)
    await user.should_see(marker=f"job-{beta.id}")

    status_filter.value = ""  # "All"
    user.find(marker="search").type("alph")
    await user.should_not_see(marker=f"job-{beta.id}", retries=50)
    await user.should_see(marker=f"job-{alpha.id}")

    user.find(marker="search").clear().type("nothing-matches")
    await user.should_see(marker="no-jobs", retries=50)


async def test_pause_resume_and_delete_from_the_list(user: User, jobs: JobSystem) -> None:
    await add_worker(jobs, "w1", 3)
    job = (await jobs.create_job(target_url=URL, duration_sec=5, title="Pausable")).job
    await login(user)
    marker = f"job-{job.id}"

    with user.scope(marker=marker):
        await user.should_see(marker="pause")
        await user.should_not_see(marker="resume")
        user.find(marker="pause").click()
    await wait_until(lambda: _status(jobs, job.id, JobStatus.PAUSED), what="paused in the database")
    with user.scope(marker=marker):
        await wait_until(lambda: text_of(user, "job-status") == "일시정지", what="paused badge")
        await user.should_see(marker="resume", retries=50)
        user.find(marker="resume").click()
    await wait_until(lambda: _status(jobs, job.id, JobStatus.ACTIVE), what="active again")
    with user.scope(marker=marker):
        await user.should_see(marker="pause", retries=50)

    with user.scope(marker=marker):
        user.find(marker="delete").click()
    await user.should_see("'Pausable' 작업과 기기 할당을 모두 삭제할까요?", retries=20)
    user.find(marker="confirm-cancel").click()
    await user.should_not_see(marker="confirm-delete", retries=20)
    assert (await jobs.get_job(job.id)).id == job.id  # still there

    with user.scope(marker=marker):
        user.find(marker="delete").click()
    await user.should_see(marker="confirm-delete", retries=20)
    user.find(marker="confirm-delete").click()
    await user.should_not_see(marker=marker, retries=50)
    assert (await jobs.list_jobs()).jobs == []


def _open(panel: ui.element) -> bool:
    """The side panel is hidden by CSS while closed (the simulated user sees no CSS)."""
    return "hidden" not in panel.classes


def _width(segment: ui.element) -> float:
    """A bar segment's share of the bar, in percent."""
    return float(segment.style["width"].rstrip("%"))


async def _status(jobs: JobSystem, job_id: object, status: JobStatus) -> bool:
    return (await jobs.get_job(job_id)).status is status  # type: ignore[arg-type]


async def test_side_panel_shows_per_device_status_that_follows_events(
    user: User, jobs: JobSystem, db: Db
) -> None:
    db.setting("progress_event_interval_ms", 0)
    session = await add_worker(jobs, "w1", 2)
    job = (await jobs.create_job(target_url=URL, duration_sec=5)).job
    await login(user, language="en")
    with user.scope(marker=f"job-{job.id}"):
        await user.should_not_see(marker="assignment-w1-000")  # a closed panel holds nothing
        user.find(marker="open-panel").click()  # the operator opens the job's panel
        await user.should_see(marker="assignment-w1-000", retries=50)
        await user.should_see(marker="assignment-w1-001")
        await user.should_see("Pending")
    assert _open(element(user, "job-panel"))

    await finish_runs(jobs, session.worker_id, completed=1, failed=1)
    with user.scope(marker=f"job-{job.id}"):
        await user.should_see("screen locked", retries=50)
        await user.should_see("Failed")
        assert element(user, "job-devices").value is True  # still open after the live refresh
    assert _open(element(user, "job-panel"))


async def test_a_job_deleted_elsewhere_disappears(user: User, jobs: JobSystem) -> None:
    await add_worker(jobs, "w1", 1)
    job = (await jobs.create_job(target_url=URL, duration_sec=5)).job
    await login(user)
    await user.should_see(marker=f"job-{job.id}")
    await jobs.delete_job(job.id)
    await user.should_not_see(marker=f"job-{job.id}", retries=50)
