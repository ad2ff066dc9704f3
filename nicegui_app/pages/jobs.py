"""Jobs page (작업 관리): summary cards, status filter and search, the live job list and the
new-job dialog. Follows job_progress / job_deleted events; never polled by the browser."""

from __future__ import annotations

import re
import uuid

from fastapi import Request
from nicegui import ui

from jobsys.events import EventName
from jobsys.models import TITLE_MAX_CHARS, Job, JobStatus
from nicegui_app.live import Coalescer, follow
from nicegui_app.pages.frame import PageContext, frame
from nicegui_app.pages.guard import guarded_page
from nicegui_app.pages.job_row import JobRow
from nicegui_app.pages.new_job_dialog import NewJobDialog

PAGE_SIZE = 25  # rows rendered at first (keeps a 1,000-job first render short); "show more" adds more
LIMIT_MAX = 1000  # list_jobs refuses more
SUMMARY_KEYS = ("total", "active", "paused", "completed")
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")


class JobsView:
    def __init__(self, ctx: PageContext) -> None:
        self.ctx = ctx
        self.rows: dict[uuid.UUID, JobRow] = {}
        self.limit = PAGE_SIZE
        self.live: Coalescer | None = None

    async def build(self) -> None:
        t = self.ctx.t
        with ui.row().classes("w-full gap-4"):
            self.cards = {key: self._summary_card(key) for key in SUMMARY_KEYS}
        with ui.row().classes("w-full items-end gap-4"):
            self.status = (
                ui.select(
                    {"": t("filter_all"), **{s.value: t(f"status_{s.value}") for s in JobStatus}},
                    value="",
                    label=t("filter_status"),
                    on_change=self._poke,
                )
                .classes("w-40")
                .mark("status-filter")
            )
            self.search = ui.input(t("search"), on_change=self._poke).props("clearable").mark("search")
            ui.space()
            ui.button(t("new_job"), icon="add", on_click=self._new_job).mark("new-job")
        self.empty = ui.label(t("no_jobs")).classes("text-gray-500").mark("no-jobs")
        self.list = ui.column().classes("w-full gap-2").mark("job-list")
        self.more = ui.button(t("more_jobs"), on_click=self._show_more).props("flat").mark("more-jobs")
        await self.refresh()
        self.live = follow(
            self.ctx.services.hub,
            self.ctx.client,
            self.refresh,
            [EventName.JOB_PROGRESS.value, EventName.JOB_DELETED.value],
            name="jobs list",
        )

    def _summary_card(self, key: str) -> ui.label:
        with ui.card().classes("min-w-36 gap-0").mark(f"summary-{key}"):
            ui.label(self.ctx.t(f"summary_{key}")).classes("text-sm text-gray-600")
            return ui.label("0").classes("text-2xl font-bold").mark(f"summary-{key}-value")

    def _poke(self) -> None:
        if self.live is not None:
            self.live.poke()

    def _query(self) -> str | None:
        text = _CONTROL_RE.sub("", self.search.value or "").strip()[:TITLE_MAX_CHARS]
        return text or None

    async def refresh(self) -> None:
        listing = await self.ctx.services.jobs.list_jobs(
            status=self.status.value or None, q=self._query(), limit=self.limit
        )
        for key, label in self.cards.items():
            label.set_text(str(getattr(listing.summary, key)))
        self._sync_rows(listing.jobs)
        self.empty.set_visibility(not listing.jobs)
        self.more.set_visibility(len(listing.jobs) >= self.limit and self.limit < LIMIT_MAX)
        for row in list(self.rows.values()):
            await row.refresh_detail()

    def _sync_rows(self, jobs: list[Job]) -> None:
        """Update rows in place: new ones appear, gone ones go, order follows the listing."""
        wanted = {job.id for job in jobs}
        for job_id in [job_id for job_id in self.rows if job_id not in wanted]:
            self.rows.pop(job_id).delete()
        for job in jobs:
            row = self.rows.get(job.id)
            if row is None:
                with self.list:
                    self.rows[job.id] = JobRow(self.ctx, job, on_change=self._poke)
            else:
                row.update(job)
        order = [self.rows[job.id].card for job in jobs]
        if list(self.list.default_slot.children) != order:
            for index, card in enumerate(order):
                card.move(self.list, target_index=index)

    async def _show_more(self) -> None:
        self.limit = min(self.limit + PAGE_SIZE, LIMIT_MAX)
        self._poke()

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
