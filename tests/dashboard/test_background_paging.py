"""The background jobs page with a search, a sort and the 진행 중 filter over more jobs than one
read returns: the database filters, sorts and pages, so the rows and "N개 중 M개" are whole,
and "더 보기" continues in the same order."""

from __future__ import annotations

from nicegui.testing import User

from jobsys.batch.facade import BatchJobs
from nicegui_app.pages.background_jobs import PAGE_SIZE, PATH
from tests.batch.test_list_filters import MANY, many_jobs
from tests.dashboard.pages import login
from tests.dashboard.test_background_page import order, shown, text_of
from tests.support.pages import element
from tests.support.postgres import Db
from tests.support.waiting import wait_until


async def test_more_than_a_read_of_matching_jobs_pages_whole_and_in_order(
        user: User, batch: BatchJobs, db: Db) -> None:
    await many_jobs(batch, db)  # 1,010 pending: past the 1,000 rows one read of a status returns
    newest_first = [f"note {i:04d}" for i in range(MANY, 0, -1)]

    await login(user, f"{PATH}?status=active&q=NOTE&sort=-title")
    await wait_until(lambda: shown(user, "batch-list") and order(user) == newest_first[:PAGE_SIZE],
                     what="the first page by title, Z→A")
    assert text_of(user, "batches-count") == f"{MANY}개 중 {PAGE_SIZE}개"

    user.find(marker="more-batches").click()
    await wait_until(lambda: order(user) == newest_first[:2 * PAGE_SIZE], what="the second page after it")
    assert text_of(user, "batches-count") == f"{MANY}개 중 {2 * PAGE_SIZE}개"
    assert element(user, "more-batches").visible
