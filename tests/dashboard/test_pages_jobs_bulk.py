"""Bulk actions on the jobs table (issue 20): select rows (one by one or all), then pause,
resume, cancel or delete them after ONE confirmation that counts and names the jobs it
affects; jobs whose state does not allow it are left out and the confirmation says so."""

from __future__ import annotations

import uuid

from nicegui.testing import User

from jobsys.models import JobStatus
from jobsys.system import JobSystem
from tests.core.helpers import add_worker
from tests.dashboard.pages import login
from tests.support.pages import element, text_of, texts
from tests.support.waiting import wait_until

URL = "https://example.com/watch"


async def _statuses(jobs: JobSystem) -> dict[str, JobStatus]:
    return {job.title: job.status for job in (await jobs.list_jobs()).jobs}


def _select(user: User, job_id: uuid.UUID) -> None:
    with user.scope(marker=f"job-{job_id}"):
        user.find(marker="job-select").click()


async def test_bulk_pause_asks_once_naming_what_it_affects(user: User, jobs: JobSystem) -> None:
    await add_worker(jobs, "w1", 2)
    for title in ("lobby", "kiosk", "menu"):
        await jobs.create_job(target_url=URL, duration_sec=5, title=title)
    already = (await jobs.create_job(target_url=URL, duration_sec=5, title="already paused")).job
    await jobs.pause_job(already.id)
    await login(user)
    await user.should_see(marker=f"job-{already.id}", retries=50)
    assert not element(user, "bulk-pause").enabled  # nothing selected yet
    assert text_of(user, "bulk-count").startswith("작업을 선택하면")

    element(user, "select-all").value = True
    await wait_until(lambda: text_of(user, "bulk-count") == "4개 선택됨", what="all selected")
    user.find(marker="bulk-pause").click()
    await user.should_see(marker="bulk-confirm", retries=20)
    assert text_of(user, "confirm-question") == (
        "작업 3개를 일시정지할까요? 선택한 작업 중 1개는 지금 상태에서는 할 수 없어 제외합니다."
    )
    assert sorted(texts(user, "confirm-details")) == ["• kiosk", "• lobby", "• menu"]
    assert text_of(user, "bulk-confirm") == "3개 일시정지"
    user.find(marker="bulk-dismiss").click()  # changed their mind: nothing happens
    await user.should_not_see(marker="bulk-confirm", retries=20)
    assert set((await _statuses(jobs)).values()) == {JobStatus.ACTIVE, JobStatus.PAUSED}
    assert [s for s in (await _statuses(jobs)).values()].count(JobStatus.PAUSED) == 1

    user.find(marker="bulk-pause").click()
    await user.should_see(marker="bulk-confirm", retries=20)
    user.find(marker="bulk-confirm").click()
    await user.should_see("작업 3개를 일시정지했습니다", retries=50)
    assert set((await _statuses(jobs)).values()) == {JobStatus.PAUSED}
    await wait_until(lambda: text_of(user, "summary-paused-value") == "4", what="the counts follow")
    assert not element(user, "select-all").value  # done: the selection is cleared


async def test_bulk_resume_and_cancel_of_some_rows(user: User, jobs: JobSystem) -> None:
    await add_worker(jobs, "w1", 2)
    ids = [(await jobs.create_job(target_url=URL, duration_sec=5, title=f"job {i}")).job.id for i in range(3)]
    for job_id in ids[:2]:
        await jobs.pause_job(job_id)
    await login(user, language="en")
    await user.should_see(marker=f"job-{ids[2]}", retries=50)
    _select(user, ids[0])
    _select(user, ids[1])
    await wait_until(lambda: text_of(user, "bulk-count") == "2 selected", what="two selected")
    user.find(marker="bulk-resume").click()
    await user.should_see(marker="bulk-confirm", retries=20)
    assert text_of(user, "confirm-question") == "Resume 2 jobs?"
    user.find(marker="bulk-confirm").click()
    await user.should_see("Resumed 2 jobs", retries=50)
    assert await _statuses(jobs) == {"job 0": JobStatus.ACTIVE, "job 1": JobStatus.ACTIVE, "job 2": JobStatus.ACTIVE}

    _select(user, ids[0])
    _select(user, ids[2])
    user.find(marker="bulk-cancel").click()
    await user.should_see(marker="bulk-confirm", retries=20)
    assert text_of(user, "confirm-question").startswith("Cancel 2 jobs? Their pending runs are cancelled")
    assert sorted(texts(user, "confirm-details")) == ["• job 0", "• job 2"]
    user.find(marker="bulk-confirm").click()
    await user.should_see("Cancelled 2 jobs", retries=50)
    assert await _statuses(jobs) == {
        "job 0": JobStatus.CANCELLED, "job 1": JobStatus.ACTIVE, "job 2": JobStatus.CANCELLED}
    assert len((await jobs.get_job(ids[0])).assignments) == 2  # the record is kept


async def test_bulk_delete_and_nothing_to_do(user: User, jobs: JobSystem) -> None:
    await add_worker(jobs, "w1", 1)
    done = (await jobs.create_job(target_url=URL, duration_sec=5, title="old")).job
    await jobs.cancel_job(done.id)
    keep = (await jobs.create_job(target_url=URL, duration_sec=5, title="keep")).job
    await login(user)
    await user.should_see(marker=f"job-{done.id}", retries=50)

    _select(user, done.id)
    user.find(marker="bulk-pause").click()  # a cancelled job cannot be paused: no question, a reason
    await user.should_see("선택한 작업 중 일시정지할 수 있는 작업이 없습니다", retries=20)
    await user.should_not_see(marker="bulk-confirm")

    user.find(marker="bulk-delete").click()
    await user.should_see(marker="bulk-confirm", retries=20)
    assert text_of(user, "confirm-question") == "작업 1개와 기기 할당을 모두 삭제할까요? 되돌릴 수 없습니다."
    assert texts(user, "confirm-details") == ["• old"]
    user.find(marker="bulk-confirm").click()
    await user.should_not_see(marker=f"job-{done.id}", retries=50)
    await user.should_see(marker=f"job-{keep.id}")
    assert [job.id for job in (await jobs.list_jobs()).jobs] == [keep.id]
