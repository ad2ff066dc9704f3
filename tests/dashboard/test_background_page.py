"""Background jobs page (백그라운드 작업 관리) as a dense table (issue 20): counts per state, the
view in the address (status, search, sort), honest bars and counts, cancel after one
confirmation, retry only when it can help (a missing key says how to fix it instead), bulk
cancel / retry, the side panel with the log in the reader's language, results and export,
and live progress from a runner with the offline provider."""

from __future__ import annotations

import asyncio
import csv
import io
from typing import Any

import pytest
from nicegui.testing import User

from jobsys.batch.facade import BatchJobs
from jobsys.batch.models import BatchStatus
from jobsys.batch.providers.base import Completion, Request
from jobsys.batch.providers.offline import OfflineProvider
from jobsys.system import JobSystem
from nicegui_app.pages import background_jobs as page
from nicegui_app.pages.background_jobs import PATH
from tests.dashboard.pages import login
from tests.dashboard.test_background_api import TEMPLATE, settle
from tests.support.pages import element, texts
from tests.support.postgres import Db
from tests.support.runners import RunnerPool, wait_final
from tests.support.waiting import wait_until

ITEMS = [{"text": f"note {i}"} for i in range(4)]
MISSING_KEY = "this job asks for Gemini but GEMINI_API_KEY is not set on the runner"


class GatedOffline(OfflineProvider):
    """The offline provider, but items whose prompt says "hold" wait for the gate."""

    def __init__(self) -> None:
        super().__init__((0.0, 0.0))
        self.gate = asyncio.Event()

    async def generate(self, request: Request) -> Completion:
        if "hold" in request.prompt:
            await self.gate.wait()
        return await super().generate(request)


def part(user: User, marker: str, job_id: object = None) -> Any:
    """The one element with this marker (in the job's row), shown or hidden."""
    assert user.client is not None
    root = user.client.layout
    if job_id is not None:
        [root] = [e for e in root.descendants() if f"batch-{job_id}" in e._markers]
    found = [e for e in root.descendants() if marker in e._markers]
    assert len(found) == 1, f"{len(found)} elements marked {marker}"
    return found[0]


def text_of(user: User, marker: str, job_id: object = None) -> str:
    return str(part(user, marker, job_id).text)


def shown(user: User, marker: str) -> bool:
    return bool(user._gather_elements(None, None, marker, None))  # no retries: for wait_until predicates


def order(user: User) -> list[str]:
    """The titles in the table, top to bottom."""
    rows = [c for c in element(user, "batch-list").default_slot.children
            if any(m.startswith("batch-") for m in c._markers)]
    return [str(next(e for e in r.descendants() if "batch-title" in e._markers).text) for r in rows]


def width(user: User, job_id: object, segment: str) -> str:
    return str(part(user, f"bar-{segment}", job_id)._style.get("width"))


@pytest.fixture
def addresses(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    shown_addresses: list[str] = []
    monkeypatch.setattr(page, "set_address", shown_addresses.append)
    return shown_addresses


async def test_counts_filter_search_and_sort_live_in_the_address(
        user: User, batch: BatchJobs, addresses: list[str]) -> None:
    partly = await batch.create_job(template=TEMPLATE, items=ITEMS, title="partly failed")
    await settle(batch, partly.id, failed=[1])
    broken = await batch.create_job(template=TEMPLATE, items=ITEMS[:2], title="all failed")
    await settle(batch, broken.id, failed=[0, 1])
    await batch.create_job(template=TEMPLATE, items=ITEMS, title="waiting")
    stopped = await batch.create_job(template=TEMPLATE, items=ITEMS, title="stopped")
    await batch.cancel_job(stopped.id)

    await login(user, PATH)
    await user.should_see("백그라운드 작업 관리")
    await wait_until(lambda: len(order(user)) == 4, what="four rows")
    values = {key: text_of(user, f"summary-{key}-value")
              for key in ("total", "active", "pending", "running", "completed", "failed", "cancelled")}
    assert values == {"total": "4", "active": "1", "pending": "1", "running": "0", "completed": "1",
                      "failed": "1", "cancelled": "1"}
    assert text_of(user, "batches-count") == "4개 중 4개"

    await user.open(f"{PATH}?status=active")  # a shared link: the filter comes with it
    await wait_until(lambda: shown(user, "batch-list") and order(user) == ["waiting"], what="active only")
    assert element(user, "status-filter").value == "active"

    element(user, "status-filter").value = ""
    user.find(marker="sort-title").click()  # A→Z
    await wait_until(lambda: order(user) == ["all failed", "partly failed", "stopped", "waiting"], what="by title")
    assert addresses[-1] == f"{PATH}?sort=title"
    user.find(marker="search").type("fail")
    await wait_until(lambda: order(user) == ["all failed", "partly failed"], what="searched")
    assert addresses[-1] == f"{PATH}?q=fail&sort=title"
    assert text_of(user, "batches-count") == "2개 중 2개"
    user.find(marker="summary-failed").click()  # a count filters by its state
    await wait_until(lambda: order(user) == ["all failed"], what="failed and searched")
    assert addresses[-1] == f"{PATH}?status=failed&q=fail&sort=title"


async def test_bars_and_counts_say_what_they_count(user: User, batch: BatchJobs) -> None:
    broken = await batch.create_job(template=TEMPLATE, items=ITEMS, title="all failed")
    await settle(batch, broken.id, failed=[0, 1, 2, 3])
    stopped = await batch.create_job(template=TEMPLATE, items=ITEMS, title="cancelled early")
    claimed = await batch.claim_job("test-runner")
    assert claimed is not None
    [first, *_] = await batch.claim_items(stopped.id, claimed.lease_token, 1)
    from jobsys.batch.models import ItemResult

    await batch.report(stopped.id, claimed.lease_token, [ItemResult(idx=first.idx, status="completed", output="x")])
    await batch.cancel_job(stopped.id)

    await login(user, PATH, language="en")
    await user.should_see(marker=f"batch-{stopped.id}", retries=50)
    # every item failed: a red bar and 0 %, not a full blue bar at 100 %
    assert text_of(user, "batch-progress", broken.id) == "0/4 (0%)"
    assert text_of(user, "batch-counts", broken.id) == "completed 0 / 4, failed 4"
    assert width(user, broken.id, "failed") == "100.00%" and width(user, broken.id, "completed") == "0.00%"
    assert text_of(user, "batch-status", broken.id) == "Failed"
    # cancelled at 1 of 4: keeps its completed item, the rest shows as cancelled
    assert text_of(user, "batch-progress", stopped.id) == "1/4 (25%)"
    assert width(user, stopped.id, "completed") == "25.00%" and width(user, stopped.id, "cancelled") == "75.00%"
    assert text_of(user, "batch-cancelled", stopped.id) == "3 cancelled"
    assert part(user, "batch-bar", stopped.id).props["aria-valuetext"] == (
        "1 completed, 0 running, 0 waiting, 0 failed, 3 cancelled")
    assert text_of(user, "batch-started", stopped.id) != "–"
    assert text_of(user, "batch-ended", stopped.id) != "–"


async def test_cancel_asks_once_naming_what_it_stops(user: User, batch: BatchJobs, db: Db) -> None:
    job = await batch.create_job(template=TEMPLATE, items=ITEMS, title="weekly notes")
    await login(user, PATH)
    await user.should_see(marker=f"batch-{job.id}", retries=50)
    assert text_of(user, "batch-status", job.id) == "대기 중"
    assert not part(user, "batch-retry", job.id).visible
    with user.scope(marker=f"batch-{job.id}"):
        user.find(marker="batch-cancel").click()
    await user.should_see(marker="confirm-cancel-batch", retries=20)
    assert text_of(user, "confirm-question") == (
        "'weekly notes' 작업을 취소할까요? 남은 항목 4개가 취소되고 실행 중인 호출은 멈춥니다. 완료된 결과 0개는 남습니다.")
    user.find(marker="cancel-keep").click()  # changed their mind: nothing happens
    await user.should_not_see(marker="confirm-cancel-batch", retries=20)
    assert db.value("select status from jobsys.background_jobs where id = %s", (job.id,)) == "pending"

    with user.scope(marker=f"batch-{job.id}"):
        user.find(marker="batch-cancel").click()
    await user.should_see(marker="confirm-cancel-batch", retries=20)
    user.find(marker="confirm-cancel-batch").click()
    await user.should_see("작업을 취소했습니다", retries=50)  # one word: 취소, as the status says
    await wait_until(lambda: text_of(user, "batch-status", job.id) == "취소됨", what="cancelled badge")
    assert not part(user, "batch-cancel", job.id).visible
    assert db.value("select status from jobsys.background_jobs where id = %s", (job.id,)) == "cancelled"


async def test_retry_requeues_only_failed_items(user: User, batch: BatchJobs, db: Db) -> None:
    job = await batch.create_job(template=TEMPLATE, items=ITEMS)
    settled = await settle(batch, job.id, failed=[0, 3])
    await login(user, PATH)
    await user.should_see(marker=f"batch-{job.id}", retries=50)
    assert text_of(user, "batch-counts", job.id) == "완료 2 / 4, 실패 2"
    started = text_of(user, "batch-started", job.id)
    with user.scope(marker=f"batch-{job.id}"):
        user.find(marker="batch-retry").click()
    await wait_until(lambda: text_of(user, "batch-status", job.id) == "대기 중", what="re-queued badge")
    assert not part(user, "batch-retry", job.id).visible and part(user, "batch-cancel", job.id).visible
    assert text_of(user, "batch-counts", job.id) == "완료 2 / 4, 실패 0"
    assert db.rows(
        "select idx from jobsys.background_job_items where job_id = %s and status = 'pending' order by idx",
        (job.id,),
    ) == [(0,), (3,)]
    await user.should_see("실패한 항목을 다시 대기열에 넣었습니다")
    # the first start is kept across the retry (its duration counts from there)
    assert (await batch.get_job(job.id)).started_at == settled.started_at is not None
    assert text_of(user, "batch-started", job.id) == started != "–"


async def test_a_missing_key_says_how_to_set_it_instead_of_a_retry(user: User, batch: BatchJobs) -> None:
    job = await batch.create_job(template=TEMPLATE, items=ITEMS, provider="gemini", title="needs a key")
    claimed = await batch.claim_job("old-runner")  # a runner that did not say what it can run
    assert claimed is not None
    await batch.finish_job(job.id, claimed.lease_token, MISSING_KEY)

    await login(user, PATH)
    await user.should_see(marker=f"batch-{job.id}", retries=50)
    assert text_of(user, "batch-fix", job.id) == "GEMINI_API_KEY 없음"
    assert not part(user, "batch-retry", job.id).visible  # retrying would fail the same way
    assert not part(user, "batch-error", job.id).visible  # the fix says it in words
    with user.scope(marker=f"batch-{job.id}"):
        user.find(marker="batch-fix").click()
    await user.should_see(marker="batch-panel-fix", retries=50)
    how = text_of(user, "batch-panel-fix-how")
    assert "GEMINI_API_KEY=" in how and "jobsys up" in how
    assert not shown(user, "batch-panel-retry")

    element(user, "select-all").value = True  # bulk retry leaves it out too
    await wait_until(lambda: element(user, "bulk-retry").enabled, what="selection")
    user.find(marker="bulk-retry").click()
    await user.should_see("선택한 작업 중 재시도로 나아질 작업이 없습니다", retries=50)


async def test_a_job_waiting_for_a_key_says_so(user: User, batch: BatchJobs) -> None:
    await batch.claim_job("offline-runner", ["offline"])  # a runner is up, without a Gemini key
    job = await batch.create_job(template=TEMPLATE, items=ITEMS, provider="gemini", title="waits for a key")
    await login(user, PATH, language="en")
    await user.should_see(marker=f"batch-{job.id}", retries=50)
    assert text_of(user, "batch-fix", job.id) == "GEMINI_API_KEY missing"
    assert text_of(user, "batch-status", job.id) == "Pending"


async def test_bulk_cancel_and_retry_ask_once(user: User, batch: BatchJobs, db: Db) -> None:
    failed = await batch.create_job(template=TEMPLATE, items=ITEMS[:2], title="two failed")
    await settle(batch, failed.id, failed=[0])
    first = await batch.create_job(template=TEMPLATE, items=ITEMS, title="first")
    second = await batch.create_job(template=TEMPLATE, items=ITEMS[:3], title="second")
    await login(user, PATH)
    await user.should_see(marker=f"batch-{second.id}", retries=50)
    assert not element(user, "bulk-cancel").enabled

    element(user, "select-all").value = True
    await wait_until(lambda: texts(user, "bulk-count") == ["3개 선택됨"], what="all selected")
    user.find(marker="bulk-cancel").click()
    await user.should_see(marker="bulk-confirm", retries=20)
    assert texts(user, "confirm-question") == [
        ("백그라운드 작업 2개를 취소할까요? 남은 항목 7개가 취소되고 실행 중인 호출은 멈춥니다. 완료된 결과는 남습니다. "
         "선택한 작업 중 1개는 지금 상태에서는 할 수 없어 제외합니다.")]
    assert sorted(texts(user, "confirm-details")) == ["• first (남은 항목 4개, 실패 0개)",
                                                      "• second (남은 항목 3개, 실패 0개)"]
    assert texts(user, "bulk-confirm") == ["2개 작업 취소"]
    user.find(marker="bulk-confirm").click()
    await user.should_see("작업 2개를 취소했습니다", retries=50)
    assert {status for (status,) in db.rows(
        "select status from jobsys.background_jobs where id in (%s, %s)", (first.id, second.id))} == {"cancelled"}

    with user.scope(marker=f"batch-{failed.id}"):
        user.find(marker="batch-select").click()
    user.find(marker="bulk-retry").click()
    await user.should_see(marker="bulk-confirm", retries=20)
    assert texts(user, "confirm-question") == [
        "작업 1개의 실패 항목 1개를 다시 대기열에 넣을까요? 완료된 결과는 그대로 둡니다."]
    user.find(marker="bulk-confirm").click()
    await user.should_see("작업 1개의 실패 항목을 다시 대기열에 넣었습니다", retries=50)
    assert db.value("select status from jobsys.background_jobs where id = %s", (failed.id,)) == "pending"


async def test_panel_shows_settings_and_the_log_in_the_readers_language(
        user: User, batch: BatchJobs, db: Db) -> None:
    job = await batch.create_job(template=TEMPLATE, items=ITEMS, title="notes")
    await settle(batch, job.id, failed=[1])
    db.run("insert into jobsys.background_job_logs (job_id, level, message) values (%s, 'info', %s)",
               (job.id, "a line from before codes"))
    await login(user, PATH)
    with user.scope(marker=f"batch-{job.id}"):
        user.find(marker="open-batch").click()
    await user.should_see(marker="log-error", retries=50)
    lines = texts(user, "batch-logs")
    assert "a line from before codes" in lines  # no code: the stored text
    assert "생성됨: 항목 4개, 모델 gemini-2.5-flash, 제공자 auto, 동시 실행 5" in lines
    assert "항목 1: 1번 시도 후 실패: 400 INVALID_ARGUMENT: blocked prompt" in lines
    assert "완료: 항목 4개 중 3개 성공, 1개 실패" in lines
    assert "실행기 test-runner에서 시작함" in lines
    assert "설정" in texts(user, "batch-panel")  # the settings section
    assert any("gemini-2.5-flash" in line for line in texts(user, "batch-panel-settings"))
    user.find(marker="batch-panel-close").click()
    await user.should_not_see(marker="log-error", retries=50)


async def test_results_dialog_and_exports(user: User, batch: BatchJobs) -> None:
    job = await batch.create_job(template=TEMPLATE, items=ITEMS, title="notes")
    await settle(batch, job.id, failed=[1])
    await login(user, PATH, language="en")
    await user.should_see(marker=f"batch-{job.id}", retries=50)
    with user.scope(marker=f"batch-{job.id}"):
        user.find(marker="batch-results").click()
    await user.should_see(marker="results-table", retries=50)
    await user.should_see(marker="results-offline")
    table = element(user, "results-table")
    await wait_until(lambda: len(table.rows) == 4, what="result rows")
    assert [(r["idx"], r["status"], r["provider"], r["output"]) for r in table.rows] == [
        (0, "Completed", "offline", "draft 0"),
        (1, "Failed", "", ""),
        (2, "Completed", "offline", "draft 2"),
        (3, "Completed", "offline", "draft 3"),
    ]
    user.find(marker="results-close").click()
    await user.should_not_see(marker="results-table", retries=50)

    with user.scope(marker=f"batch-{job.id}"):
        user.find(marker="batch-export-csv").click()
    download = await user.download.next(timeout=5)
    rows = list(csv.DictReader(io.StringIO(download.content.decode("utf-8-sig"))))
    assert (rows[0]["idx"], rows[0]["status"], rows[0]["provider"], rows[0]["output"]) == (
        "0", "completed", "offline", "draft 0")


async def test_progress_arrives_live_from_a_runner(
    user: User, batch: BatchJobs, db: Db, start_runner: RunnerPool
) -> None:
    db.setting("progress_event_interval_ms", 0)  # every change is pushed: the test sees each step
    provider = GatedOffline()
    await start_runner(provider)
    await login(user, PATH)
    client = user.client
    items = [{"text": "go 0"}, {"text": "go 1"}, {"text": "go 2"}, {"text": "hold 3"}, {"text": "hold 4"}]
    job = await batch.create_job(template=TEMPLATE, items=items, concurrency=5, title="live notes")

    await user.should_see(marker=f"batch-{job.id}", retries=50)  # appears without a reload
    await wait_until(lambda: text_of(user, "batch-progress", job.id) == "3/5 (60%)", what="3 of 5 done")
    assert text_of(user, "batch-status", job.id) == "실행 중"
    assert text_of(user, "batch-running", job.id) == "실행 중 2개"
    assert part(user, "batch-offline", job.id).visible
    assert part(user, "batch-cancel", job.id).visible
    assert text_of(user, "summary-active-value") == "1"

    provider.gate.set()
    final = await wait_final(batch, job.id)
    assert final.status is BatchStatus.COMPLETED
    await wait_until(lambda: text_of(user, "batch-status", job.id) == "완료", what="completed badge")
    assert text_of(user, "batch-progress", job.id) == "5/5 (100%)"
    assert not part(user, "batch-cancel", job.id).visible
    await wait_until(lambda: text_of(user, "summary-completed-value") == "1", what="completed count")
    assert user.client is client  # the same page, updated in place


async def test_a_viewer_reads_and_exports_but_is_offered_no_change(
        user: User, batch: BatchJobs, jobs: JobSystem) -> None:
    failed = await batch.create_job(template=TEMPLATE, items=ITEMS, title="some failed")
    await settle(batch, failed.id, failed=[0])
    waiting = await batch.create_job(template=TEMPLATE, items=ITEMS, title="waiting")
    viewer = await jobs.add_operator_account("vera", "viewer")
    user.http_client.headers["Accept-Language"] = "ko"
    await user.open(PATH)
    await user.should_see(marker="token", retries=50)
    user.find(marker="token").type(viewer.token)
    user.find(marker="login").click()
    await user.should_see(marker=f"batch-{waiting.id}", retries=50)
    for marker in ("new-batch", "bulk-bar", "select-all", "batch-select", "batch-cancel", "batch-retry"):
        await user.should_not_see(marker=marker)
    await user.should_see(marker="batch-results")  # reading stays
    with user.scope(marker=f"batch-{failed.id}"):
        user.find(marker="open-batch").click()
    await user.should_see(marker="batch-panel-export-csv", retries=50)
    await user.should_not_see(marker="batch-panel-retry")
