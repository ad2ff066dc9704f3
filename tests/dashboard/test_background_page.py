"""Background jobs page (백그라운드 작업 관리): tabs with counts, the per-job monitor, cancel and
retry, logs, results and export, and live progress from a runner with the offline provider."""

from __future__ import annotations

import asyncio
import csv
import io
from typing import Any

from nicegui.testing import User

from jobsys.batch.facade import BatchJobs
from jobsys.batch.models import BatchStatus
from jobsys.batch.providers.base import Completion, Request
from jobsys.batch.providers.offline import OfflineProvider
from nicegui_app.pages.background_jobs import PATH
from nicegui_app.services import Services
from tests.dashboard.pages import login
from tests.dashboard.test_background_api import TEMPLATE, settle
from tests.support.pages import element, texts
from tests.support.postgres import Db
from tests.support.runners import RunnerPool, wait_final
from tests.support.waiting import wait_until

ITEMS = [{"text": f"note {i}"} for i in range(4)]


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
    """The one element with this marker (in the job's card), shown or hidden: user.find sees only shown ones."""
    assert user.client is not None
    root = user.client.layout
    if job_id is not None:
        [root] = [e for e in root.descendants() if f"batch-{job_id}" in e._markers]
    found = [e for e in root.descendants() if marker in e._markers]
    assert len(found) == 1, f"{len(found)} elements marked {marker}"
    return found[0]


def text_of(user: User, marker: str, job_id: object = None) -> str:
    return str(part(user, marker, job_id).text)


def tab_label(user: User, name: str) -> str:
    return str(element(user, f"tab-{name}").props["label"])


def shown(user: User, marker: str) -> bool:
    return bool(user._gather_elements(None, None, marker, None))  # no retries: for wait_until predicates


async def test_tabs_count_by_status_and_filter(user: User, batch: BatchJobs, dashboard: Services) -> None:
    partly = await batch.create_job(template=TEMPLATE, items=ITEMS, title="partly failed")
    await settle(batch, partly.id, failed=[1])
    broken = await batch.create_job(template=TEMPLATE, items=ITEMS[:2], title="all failed")
    await settle(batch, broken.id, failed=[0, 1])
    waiting = await batch.create_job(template=TEMPLATE, items=ITEMS, title="waiting")
    stopped = await batch.create_job(template=TEMPLATE, items=ITEMS, title="stopped")
    await batch.cancel_job(stopped.id)

    await login(user, PATH)
    await user.should_see("백그라운드 작업 관리")
    assert len(dashboard.hub) == 2  # the header's device count and this list: one listener each
    assert [tab_label(user, n) for n in ("all", "running", "completed", "failed")] == [
        "전체 (4)",
        "진행중 (1)",
        "완료 (1)",
        "실패 (1)",
    ]
    for job in (partly, broken, waiting, stopped):
        await user.should_see(marker=f"batch-{job.id}")

    element(user, "batch-tabs").value = "failed"
    await user.should_not_see(marker=f"batch-{partly.id}", retries=50)
    await user.should_see(marker=f"batch-{broken.id}")
    assert not shown(user, f"batch-{waiting.id}") and not shown(user, f"batch-{stopped.id}")

    user.find(marker="tab-running").click()
    await user.should_see(marker=f"batch-{waiting.id}", retries=50)
    assert not shown(user, f"batch-{broken.id}")

    element(user, "batch-tabs").value = "completed"
    await user.should_see(marker=f"batch-{partly.id}", retries=50)
    assert not shown(user, f"batch-{waiting.id}")

    queued = await batch.create_job(template=TEMPLATE, items=ITEMS, title="queued later")  # arrives by push
    await wait_until(lambda: tab_label(user, "running") == "진행중 (2)", what="running count")
    assert tab_label(user, "all") == "전체 (5)"
    assert not shown(user, f"batch-{queued.id}")  # not on the completed tab


async def test_monitor_shows_counts_times_error_and_offline(user: User, batch: BatchJobs) -> None:
    job = await batch.create_job(template=TEMPLATE, items=ITEMS, title="Weekly notes")
    await settle(batch, job.id, failed=[2])
    await login(user, PATH, language="en")
    await user.should_see("Background jobs")
    with user.scope(marker=f"batch-{job.id}"):
        await user.should_see("Weekly notes")
        assert text_of(user, "batch-status") == "Completed"
        assert text_of(user, "batch-percent") == "100%"
        assert part(user, "batch-bar").value == 1.0
        assert (
            text_of(user, "batch-total"),
            text_of(user, "batch-completed"),
            text_of(user, "batch-failed"),
        ) == ("Total 4", "Completed 3", "Failed 1")
        assert text_of(user, "batch-started").startswith("Started: ")
        assert text_of(user, "batch-finished").startswith("Finished: ")
        assert text_of(user, "batch-elapsed").startswith("Elapsed: 0:")
        assert text_of(user, "batch-error") == "1 of 4 items failed"
        assert part(user, "batch-offline").visible  # outputs came from the offline provider
        assert text_of(user, "batch-offline") == "offline"
        assert part(user, "batch-retry").visible and not part(user, "batch-cancel").visible


async def test_cancel_stops_a_job(user: User, batch: BatchJobs, db: Db) -> None:
    job = await batch.create_job(template=TEMPLATE, items=ITEMS)
    await login(user, PATH)
    with user.scope(marker=f"batch-{job.id}"):
        assert text_of(user, "batch-status") == "대기중"
        assert part(user, "batch-cancel").visible and not part(user, "batch-retry").visible
        assert not part(user, "batch-offline").visible  # nothing ran yet
        user.find(marker="batch-cancel").click()
    await wait_until(lambda: text_of(user, "batch-status") == "취소됨", what="cancelled badge")
    assert not part(user, "batch-cancel").visible
    assert text_of(user, "batch-cancelled") == "취소 4"
    assert db.value("select status from jobsys.background_jobs where id = %s", (job.id,)) == "cancelled"


async def test_retry_requeues_only_failed_items(user: User, batch: BatchJobs, db: Db) -> None:
    job = await batch.create_job(template=TEMPLATE, items=ITEMS)
    await settle(batch, job.id, failed=[0, 3])
    await login(user, PATH)
    with user.scope(marker=f"batch-{job.id}"):
        assert text_of(user, "batch-failed") == "실패 2"
        user.find(marker="batch-retry").click()
    await wait_until(lambda: text_of(user, "batch-status") == "대기중", what="re-queued badge")
    assert not part(user, "batch-retry").visible and part(user, "batch-cancel").visible
    assert text_of(user, "batch-completed") == "완료 2" and text_of(user, "batch-failed") == "실패 0"
    assert db.rows(
        "select idx from jobsys.background_job_items where job_id = %s and status = 'pending' order by idx",
        (job.id,),
    ) == [(0,), (3,)]
    await user.should_see("실패한 항목을 다시 대기열에 넣었습니다")


async def test_logs_open_newest_first_coloured_by_level(user: User, batch: BatchJobs) -> None:
    job = await batch.create_job(template=TEMPLATE, items=ITEMS)
    await settle(batch, job.id, failed=[1])
    logs = (await batch.job_logs(job.id)).logs
    await login(user, PATH, language="en")
    with user.scope(marker=f"batch-{job.id}"):
        part(user, "batch-logs").value = True  # the operator opens the log
        await user.should_see(marker="log-error", retries=50)
    lines = [
        e for e in part(user, "batch-logs").descendants() if any(m.startswith("log-") for m in e._markers)
    ]
    assert [e._markers for e in lines] == [
        [f"log-{line.level.value}"] for line in logs
    ]  # newest first, as the API
    messages = [
        str(getattr(c, "text", "")) for r in lines for c in r.descendants() if "break-all" in c.classes
    ]
    assert messages == [line.message for line in logs]
    error_line = next(r for r in lines if "log-error" in r._markers)
    assert any("text-negative" in c.classes for c in error_line.descendants())
    assert "blocked prompt" in " ".join(texts(user, "log-error"))


async def test_results_dialog_and_exports(user: User, batch: BatchJobs) -> None:
    job = await batch.create_job(template=TEMPLATE, items=ITEMS, title="notes")
    await settle(batch, job.id, failed=[1])
    await login(user, PATH, language="en")
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
    assert text_of(user, "results-range") == "1–4 of 4"
    element(user, "results-status").value = BatchStatus.FAILED.value
    await wait_until(lambda: [r["idx"] for r in table.rows] == [1], what="failed rows only")

    user.find(marker="results-export-jsonl").click()
    jsonl = await user.download.next(timeout=5)
    assert jsonl.text.count("\n") == 4 and '"provider": "offline"' in jsonl.text
    user.find(marker="results-close").click()
    await user.should_not_see(marker="results-table", retries=50)

    with user.scope(marker=f"batch-{job.id}"):
        user.find(marker="batch-export-csv").click()
    download = await user.download.next(timeout=5)
    rows = list(csv.DictReader(io.StringIO(download.content.decode("utf-8-sig"))))
    assert (rows[0]["idx"], rows[0]["status"], rows[0]["provider"], rows[0]["output"]) == (
        "0",
        "completed",
        "offline",
        "draft 0",
    )


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
    with user.scope(marker=f"batch-{job.id}"):
        await wait_until(lambda: text_of(user, "batch-percent") == "60%", what="3 of 5 done")
        assert text_of(user, "batch-status") == "실행중"
        assert text_of(user, "batch-completed") == "완료 3"
        assert part(user, "batch-bar").value == 0.6
        assert part(user, "batch-offline").visible  # the offline provider made these
        assert part(user, "batch-cancel").visible
        assert text_of(user, "batch-elapsed").startswith("경과: 0:")
        assert not part(user, "batch-finished").visible
    assert tab_label(user, "running") == "진행중 (1)"

    provider.gate.set()
    final = await wait_final(batch, job.id)
    assert final.status is BatchStatus.COMPLETED
    with user.scope(marker=f"batch-{job.id}"):
        await wait_until(lambda: text_of(user, "batch-status") == "완료", what="completed badge")
        assert text_of(user, "batch-percent") == "100%"
        assert text_of(user, "batch-completed") == "완료 5"
        assert part(user, "batch-finished").visible
        assert not part(user, "batch-cancel").visible
    await wait_until(lambda: tab_label(user, "completed") == "완료 (1)", what="completed count")
    assert tab_label(user, "running") == "진행중 (0)"
    assert user.client is client  # the same page, updated in place
