"""Jobs page for issue 17: incomplete jobs with their reason and numbers, waiting for devices,
retry of the failed devices, run again, export, cancel with a confirmation (history kept),
the summary card and filter for incomplete, and the new-job dialog's shortfall warning."""

from __future__ import annotations

import csv
import datetime as dt
import io
import uuid

from nicegui.testing import User

from jobsys.models import EndReason, Job, JobStatus, TargetType
from jobsys.system import JobSystem
from nicegui_app.i18n import Translator
from nicegui_app.pages.job_row import end_text, schedule_text, shortfall_text
from tests.core.helpers import add_worker
from tests.dashboard.pages import finish_runs, login
from tests.support.pages import element, text_of
from tests.support.waiting import wait_until

URL = "https://example.com/watch"


async def _settle(jobs: JobSystem) -> None:
    await jobs.maintain(force=True)
    await jobs.maintain(force=True)


async def test_incomplete_row_says_why_with_its_numbers(user: User, jobs: JobSystem) -> None:
    session = await add_worker(jobs, "w1", 2)
    short = (await jobs.create_job(target_url=URL, duration_sec=5, target_type="device_count",
                                   target_value=5, topup_grace_sec=0, title="short")).job
    await finish_runs(jobs, session.worker_id, completed=2)
    await _settle(jobs)
    assert (await jobs.get_job(short.id)).end_reason is EndReason.NO_ELIGIBLE_DEVICES
    await login(user)
    with user.scope(marker=f"job-{short.id}"):
        await user.should_see("미완료 – 연결된 기기 부족", retries=50)
        await user.should_see("완료 2, 실패 0, 3대 부족")
        await user.should_not_see(marker="retry-failed")  # nothing failed
        await user.should_not_see(marker="cancel-job")  # it has ended
        await user.should_not_see(marker="pause")
    assert text_of(user, "summary-incomplete-value") == "1"
    assert text_of(user, "summary-active-value") == "0"
    await user.should_see("미완료")  # the card's label

    other = (await jobs.create_job(target_url=f"{URL}/2", duration_sec=5)).job
    await user.should_see(marker=f"job-{other.id}", retries=50)
    status_filter = element(user, "status-filter")
    assert status_filter.options[JobStatus.INCOMPLETE.value] == "미완료"
    status_filter.value = JobStatus.INCOMPLETE.value
    await user.should_not_see(marker=f"job-{other.id}", retries=50)
    await user.should_see(marker=f"job-{short.id}")


def test_reasons_in_words_in_both_languages() -> None:
    now = dt.datetime.now(dt.timezone.utc)
    job = Job(
        id=uuid.uuid4(), title="t", action="open_url", target_url=URL, duration_sec=5,
        target_type=TargetType.DEVICE_COUNT, target_value=10, target_count=10, status=JobStatus.INCOMPLETE,
        max_attempts=3, assigned_count=9, running_count=0, completed_count=6, failed_count=3,
        cancelled_count=0, created_at=now, updated_at=now,
    )
    ko, en = Translator("ko"), Translator("en")
    expected = {
        EndReason.NO_ELIGIBLE_DEVICES: ("미완료 – 연결된 기기 부족", "Incomplete – not enough devices"),
        EndReason.TIMED_OUT: ("미완료 – 시간 초과", "Incomplete – timed out"),
        EndReason.MAX_ATTEMPTS: ("미완료 – 재시도 한도 초과", "Incomplete – max attempts reached"),
    }
    for reason, (korean, english) in expected.items():
        ended = job.model_copy(update={"end_reason": reason})
        assert (end_text(ko, ended), end_text(en, ended)) == (korean, english)
    assert shortfall_text(ko, job) == "완료 6, 실패 3, 4대 부족"
    assert shortfall_text(en, job) == "completed 6, failed 3, 4 short"
    active = job.model_copy(update={"status": JobStatus.ACTIVE})
    assert end_text(ko, active) == shortfall_text(ko, active) == schedule_text(ko, active) == ""


def test_a_scheduled_row_says_when_it_starts() -> None:
    now = dt.datetime.now(dt.timezone.utc)
    job = Job(
        id=uuid.uuid4(), title="t", action="open_url", target_url=URL, duration_sec=5,
        target_type=TargetType.ALL_DEVICES, target_value=None, target_count=3, status=JobStatus.SCHEDULED,
        max_attempts=3, assigned_count=0, running_count=0, completed_count=0, failed_count=0,
        cancelled_count=0, created_at=now, updated_at=now, start_at=now.replace(hour=9, minute=0, second=0),
    )
    local = job.start_at.astimezone() if job.start_at else None
    assert local is not None
    text = schedule_text(Translator("ko"), job)
    assert text.startswith("예약: ") and local.strftime("%H:%M:%S") in text
    assert schedule_text(Translator("en"), job).startswith("Starts ")


async def test_waiting_for_devices_then_it_ends(user: User, jobs: JobSystem) -> None:
    session = await add_worker(jobs, "w1", 2)
    job = (await jobs.create_job(target_url=URL, duration_sec=5, target_type="device_count",
                                 target_value=5, topup_grace_sec=3600)).job
    await finish_runs(jobs, session.worker_id, completed=2)
    await _settle(jobs)
    assert (await jobs.get_job(job.id)).waiting_for_devices == 3
    await login(user, language="en")
    with user.scope(marker=f"job-{job.id}"):
        await user.should_see("Waiting for 3 more devices", retries=50)
        await user.should_see("Active")
    await jobs.cancel_job(job.id)  # from elsewhere: the wait is over
    with user.scope(marker=f"job-{job.id}"):
        await user.should_not_see("Waiting for 3 more devices", retries=50)


async def test_waiting_in_korean(user: User, jobs: JobSystem) -> None:
    session = await add_worker(jobs, "w1", 1)
    job = (await jobs.create_job(target_url=URL, duration_sec=5, target_type="device_count",
                                 target_value=4, topup_grace_sec=3600)).job
    await finish_runs(jobs, session.worker_id, completed=1)
    await _settle(jobs)
    await login(user)
    with user.scope(marker=f"job-{job.id}"):
        await user.should_see("기기 3대 부족 – 대기 중", retries=50)


async def test_retry_failed_reopens_and_a_second_retry_says_nothing_failed(
    user: User, jobs: JobSystem
) -> None:
    session = await add_worker(jobs, "w1", 2)
    job = (await jobs.create_job(target_url=URL, duration_sec=5, topup_grace_sec=0, title="flaky")).job
    await finish_runs(jobs, session.worker_id, failed=2)
    await _settle(jobs)
    assert (await jobs.get_job(job.id)).end_reason is EndReason.MAX_ATTEMPTS
    await login(user)
    marker = f"job-{job.id}"
    with user.scope(marker=marker):
        await user.should_see("미완료 – 재시도 한도 초과", retries=50)
        await user.should_see("완료 0, 실패 2, 2대 부족")
        user.find(marker="retry-failed").click()
    await user.should_see("실패한 기기 2대를 다시 대기열에 넣었습니다", retries=50)
    await wait_until(lambda: _status(jobs, job.id, JobStatus.ACTIVE), what="re-opened")
    with user.scope(marker=marker):
        await user.should_see("진행 중", retries=50)
        await user.should_not_see(marker="retry-failed", retries=50)  # nothing failed any more

    await finish_runs(jobs, session.worker_id, completed=1, failed=1)
    with user.scope(marker=marker):
        await user.should_see(marker="retry-failed", retries=50)
    await jobs.retry_job(job.id)  # from elsewhere, before the row knows: the click meets a 409
    with user.scope(marker=marker):
        user.find(marker="retry-failed").click()
    await user.should_see("재시도할 실패 기기가 없습니다", retries=50)


async def test_run_again_and_export(user: User, jobs: JobSystem) -> None:
    session = await add_worker(jobs, "w1", 2)
    job = (await jobs.create_job(target_url=URL, duration_sec=5, title="nightly", timeout_sec=600)).job
    await finish_runs(jobs, session.worker_id, completed=1, failed=1)
    await login(user, language="en")
    with user.scope(marker=f"job-{job.id}"):
        user.find(marker="export").click()
    download = await user.download.next(timeout=5)
    assert download.content.startswith("\ufeff".encode())
    rows = list(csv.DictReader(io.StringIO(download.content.decode("utf-8-sig"))))
    assert sorted((r["status"], r["worker_name"]) for r in rows) == [("completed", "w1"), ("failed", "w1")]
    assert {r["device_serial"] for r in rows} == {"w1-000", "w1-001"}

    with user.scope(marker=f"job-{job.id}"):
        user.find(marker="run-again").click()
    await user.should_see("New job with the same settings: assigned to 2 devices", retries=50)
    listing = await jobs.list_jobs()
    assert len(listing.jobs) == 2
    clone = next(j for j in listing.jobs if j.id != job.id)
    assert (clone.title, clone.target_url, clone.timeout_sec) == ("nightly", URL, 600)
    await user.should_see(marker=f"job-{clone.id}", retries=50)


async def test_cancel_asks_first_and_keeps_the_history(user: User, jobs: JobSystem) -> None:
    session = await add_worker(jobs, "w1", 3)
    job = (await jobs.create_job(target_url=URL, duration_sec=5, title="Stoppable")).job
    await finish_runs(jobs, session.worker_id, completed=1)
    await login(user)
    marker = f"job-{job.id}"
    with user.scope(marker=marker):
        user.find(marker="cancel-job").click()
    await user.should_see("'Stoppable' 작업을 취소할까요?", retries=20)
    user.find(marker="cancel-keep").click()  # 계속 실행
    await user.should_not_see(marker="confirm-cancel-job", retries=20)
    assert (await jobs.get_job(job.id)).status is JobStatus.ACTIVE

    with user.scope(marker=marker):
        user.find(marker="cancel-job").click()
    await user.should_see(marker="confirm-cancel-job", retries=20)
    user.find(marker="confirm-cancel-job").click()
    await wait_until(lambda: _status(jobs, job.id, JobStatus.CANCELLED), what="cancelled")
    with user.scope(marker=marker):
        await user.should_see("취소됨", retries=50)
        await user.should_not_see(marker="cancel-job", retries=50)
    detail = await jobs.get_job(job.id)  # history kept: every run is still there
    assert len(detail.assignments) == 3
    assert sorted(a.status.value for a in detail.assignments) == ["cancelled", "cancelled", "completed"]


async def _status(jobs: JobSystem, job_id: object, status: JobStatus) -> bool:
    return (await jobs.get_job(job_id)).status is status  # type: ignore[arg-type]


async def test_new_job_dialog_warns_when_the_count_exceeds_the_connected_devices(
    user: User, jobs: JobSystem
) -> None:
    await add_worker(jobs, "w1", 3)
    await login(user)
    user.find(marker="new-job").click()
    await user.should_see(marker="new-job-url", retries=20)
    user.find(marker="new-job-url").type(URL)
    await user.should_not_see(marker="new-job-warning")  # all devices: 3 connected, fine
    element(user, "new-job-target").value = TargetType.DEVICE_COUNT.value
    user.find(marker="new-job-count").clear().type("3")
    await user.should_not_see(marker="new-job-warning")
    user.find(marker="new-job-count").clear().type("5")
    await user.should_see(marker="new-job-warning", retries=20)
    assert text_of(user, "new-job-warning") == (
        "지금 연결된 기기는 3대뿐입니다. 3대에 먼저 배정하고 나머지 2대는 기기가 연결되는 대로 배정합니다. "
        "대기 시간 안에 기기가 모자라면 작업은 미완료로 끝납니다."
    )
    assert element(user, "new-job-create").enabled  # a warning, not a refusal


async def test_new_job_dialog_warns_when_no_device_is_connected(user: User, jobs: JobSystem) -> None:
    await login(user, language="en")
    user.find(marker="new-job").click()
    await user.should_see(marker="new-job-url", retries=20)
    await user.should_see(marker="new-job-warning", retries=20)
    assert "cannot be created now" in text_of(user, "new-job-warning")  # all devices of none: refused
    element(user, "new-job-target").value = TargetType.DEVICE_COUNT.value
    await wait_until(
        lambda: "waits for devices" in text_of(user, "new-job-warning"), what="device count warning"
    )
    assert text_of(user, "new-job-warning").startswith("No device is connected. The job is created")


async def test_a_scheduled_job_shows_its_start_and_can_be_paused(user: User, jobs: JobSystem) -> None:
    await add_worker(jobs, "w1", 2)
    start_at = dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=1)
    job = (await jobs.create_job(target_url=URL, duration_sec=5, target_type="device_count", target_value=1,
                                 start_at=start_at, title="later")).job
    assert job.status is JobStatus.SCHEDULED
    await login(user)
    with user.scope(marker=f"job-{job.id}"):
        await user.should_see("예약됨", retries=50)
        await user.should_see(marker="cancel-job")
        await user.should_see(marker="pause")
    with user.scope(marker=f"job-{job.id}"):
        user.find(marker="pause").click()
    await wait_until(lambda: _status_is(jobs, job.id, JobStatus.PAUSED), timeout_s=10, what="the job paused")


async def _status_is(jobs: JobSystem, job_id: uuid.UUID, status: JobStatus) -> bool:
    return (await jobs.get_job(job_id)).status is status
