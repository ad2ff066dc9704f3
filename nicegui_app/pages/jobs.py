"""Jobs page (작업 관리): summary cards, status filter and search, the live job list and the
new-job dialog. Follows job_progress / job_deleted events; never polled by the browser."""

from __future__ import annotations

import re

from fastapi import Request
from nicegui import ui

from jobsys.events import EventName
from jobsys.models import TITLE_MAX_CHARS, Job, JobStatus
from nicegui_app.pages.frame import frame
from nicegui_app.pages.guard import guarded_page
from nicegui_app.pages.job_row import JobRow
from nicegui_app.pages.new_job_dialog import NewJobDialog
from nicegui_app.pages.rows import LiveView, RowList, status_filter

PAGE_SIZE = 25  # rows rendered at first (keeps a 1,000-job first render short); "show more" adds more
SUMMARY_KEYS = ("total", "active", "paused", "completed", "incomplete")
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")


class JobsView(LiveView):
    async def build(self) -> None:
        t = self.ctx.t
        with ui.row().classes("w-full gap-4"):
            self.cards = {key: self._summary_card(key) for key in SUMMARY_KEYS}
        with ui.row().classes("w-full items-end gap-4"):
            statuses = {s.value: t(f"status_{s.value}") for s in JobStatus}
            self.status = status_filter(t, statuses, self._poke, "status-filter")
            self.search = ui.input(t("search"), on_change=self._poke).props("clearable").mark("search")
            ui.space()
            ui.button(t("new_job"), icon="add", on_click=self._new_job).mark("new-job")
        self.rows: RowList[Job, JobRow] = RowList(
            self.ctx, JobRow, page_size=PAGE_SIZE, on_change=self._poke, empty_key="no_jobs",
            marks=("no-jobs", "job-list", "more-jobs"),
        )
        await self._follow([EventName.JOB_PROGRESS.value, EventName.JOB_DELETED.value], name="jobs list")

    def _summary_card(self, key: str) -> ui.label:
        with ui.card().classes("min-w-36 gap-0").mark(f"summary-{key}"):
            ui.label(self.ctx.t(f"summary_{key}")).classes("text-sm text-gray-600")
            return ui.label("0").classes("text-2xl font-bold").mark(f"summary-{key}-value")

    def _query(self) -> str | None:
        text = _CONTROL_RE.sub("", self.search.value or "").strip()[:TITLE_MAX_CHARS]
        return text or None

    async def refresh(self) -> None:
        listing = await self.ctx.services.jobs.list_jobs(
            status=self.status.value or None, q=self._query(), limit=self.rows.limit
        )
        for key, label in self.cards.items():
            label.set_text(str(getattr(listing.summary, key)))
        self.rows.show(listing.jobs)
        for row in self.rows:
            await row.refresh_detail()

    async def _new_job(self) -> None:
        created = await NewJobDialog(self.ctx).run()
        if created is not None:
            ui.notify(self.ctx.t("created", assigned=created.assigned), type="positive")
            self._poke()


def create() -> None:
    @guarded_page("/")
    async def jobs_page(request: Request) -> None:
        async with frame(request, "nav_jobs") as ctx:
            await JobsView(ctx).build()
