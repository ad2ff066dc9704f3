"""Background jobs page (백그라운드 작업 관리): tabs all / running / completed / failed with
counts, a progress monitor per AI batch, and the new-batch dialog.

Follows background_job_progress through the hub (one push subscription per process,
re-reads coalesced); the browser never polls. The only timer is local to the page: it
moves the elapsed time of running jobs on once a second without reading anything.
"""

from __future__ import annotations

import datetime as dt

from fastapi import Request
from nicegui import ui

from jobsys.batch.models import BatchJob, BatchStatus, BatchSummary
from jobsys.events import EventName
from nicegui_app.pages.batch_row import BatchRow
from nicegui_app.pages.frame import frame
from nicegui_app.pages.guard import guarded_page
from nicegui_app.pages.new_batch_dialog import NewBatchDialog
from nicegui_app.pages.rows import LiveView, RowList

PATH = "/background-jobs"
PAGE_SIZE = 100  # rows rendered at first; "show more" adds as many again
ELAPSED_TICK_S = 1.0
TAB_STATUSES: dict[str, tuple[BatchStatus, ...]] = {
    "all": (),  # every status, cancelled included
    "running": (BatchStatus.PENDING, BatchStatus.RUNNING),  # not finished yet: queued jobs count too
    "completed": (BatchStatus.COMPLETED,),
    "failed": (BatchStatus.FAILED,),
}


def tab_counts(summary: BatchSummary) -> dict[str, int]:
    return {
        "all": summary.total,
        "running": summary.pending + summary.running,
        "completed": summary.completed,
        "failed": summary.failed,
    }


class BackgroundJobsView(LiveView):
    async def build(self) -> None:
        t = self.ctx.t
        with ui.row().classes("w-full items-center gap-4"):
            self.tab_bar = ui.tabs(on_change=self._poke).props("no-caps").mark("batch-tabs")
            with self.tab_bar:
                self.tabs = {
                    name: ui.tab(name, t(f"tab_{name}")).mark(f"tab-{name}") for name in TAB_STATUSES
                }
            self.tab_bar.set_value("all")
            ui.space()
            ui.button(t("new_batch"), icon="add", on_click=self._new_batch).mark("new-batch")
        self.rows: RowList[BatchJob, BatchRow] = RowList(
            self.ctx, BatchRow, page_size=PAGE_SIZE, on_change=self._poke, empty_key="no_batches",
            marks=("no-batches", "batch-list", "more-batches"),
        )
        await self._follow([EventName.BACKGROUND_JOB_PROGRESS.value], name="background jobs")
        ui.timer(ELAPSED_TICK_S, self._tick)  # local: moves elapsed labels, reads nothing

    @property
    def tab(self) -> str:
        value = self.tab_bar.value
        return value if value in TAB_STATUSES else "all"

    async def _read(self) -> tuple[list[BatchJob], BatchSummary]:
        batch = self.ctx.services.batch
        statuses = TAB_STATUSES[self.tab]
        if not statuses:
            listing = await batch.list_jobs(limit=self.rows.limit)
            return listing.jobs, listing.summary
        jobs: list[BatchJob] = []
        summary: BatchSummary | None = None
        for status in statuses:  # the SQL filter takes one status
            listing = await batch.list_jobs(status=status, limit=self.rows.limit)
            jobs.extend(listing.jobs)
            summary = listing.summary
        jobs.sort(key=lambda job: (job.created_at, str(job.id)), reverse=True)  # newest first, as listed
        assert summary is not None
        return jobs[: self.rows.limit], summary

    async def refresh(self) -> None:
        t = self.ctx.t
        jobs, summary = await self._read()
        for name, count in tab_counts(summary).items():
            self.tabs[name].set_label(t("tab_count", label=t(f"tab_{name}"), n=count))
        self.rows.show(jobs)
        for row in self.rows:
            await row.refresh_logs()

    def _tick(self) -> None:
        now = dt.datetime.now(dt.UTC)
        for row in self.rows:
            if row.ticking:
                row.tick(now)

    async def _new_batch(self) -> None:
        job = await NewBatchDialog(self.ctx).run()
        if job is not None:
            ui.notify(self.ctx.t("batch_created", n=job.total_items), type="positive")
            self._poke()


def create() -> None:
    @guarded_page(PATH)
    async def background_jobs_page(request: Request) -> None:
        async with frame(request, "nav_background") as ctx:
            await BackgroundJobsView(ctx).build()
