"""Background jobs page (백그라운드 작업 관리): counts per state (a click filters by it), status
filter and search, the table of AI batches (batch_table.py: one line each, sorting, bulk cancel
and retry, a side panel per batch) and the new-batch dialog.

The view lives in the address (`/background-jobs?status=failed&q=notes&sort=-created`), so a
link shows the same filter, search and order and a reload keeps them. Follows
background_job_progress through the hub (one push subscription per process, re-reads
coalesced); the browser never polls. The only timer is local: it moves the age and duration
of unfinished jobs on once a second without reading anything.
"""

from __future__ import annotations

import datetime as dt
import urllib.parse

from fastapi import Request
from nicegui import ui

from jobsys.batch.models import BatchStatus, BatchSummary
from jobsys.events import EventName
from nicegui_app.pages import batch_state
from nicegui_app.pages.batch_table import BatchTable, parse_sort
from nicegui_app.pages.frame import PageContext, frame
from nicegui_app.pages.guard import guarded_page
from nicegui_app.pages.jobs import clean_query
from nicegui_app.pages.new_batch_dialog import NewBatchDialog
from nicegui_app.pages.rows import LiveView, status_filter

PATH = "/background-jobs"
PAGE_SIZE = 25  # rows rendered at first; "더 보기" adds as many again
DEFAULT_SORT = "-created"  # list_background_jobs' own default: newest first
TICK_S = 1.0
SUMMARY_KEYS = ("total", batch_state.ACTIVE, *(status.value for status in BatchStatus))


def summary_counts(summary: BatchSummary) -> dict[str, int]:
    counts = {"total": summary.total, batch_state.ACTIVE: summary.pending + summary.running}
    counts.update({status.value: int(getattr(summary, status.value)) for status in BatchStatus})
    return counts


def address(status: str | None, q: str | None, sort: str) -> str:
    """The page's address for this view (defaults left out)."""
    params = {"status": status, "q": q, "sort": None if sort == DEFAULT_SORT else sort}
    query = urllib.parse.urlencode({key: value for key, value in params.items() if value})
    return f"{PATH}?{query}" if query else PATH


def set_address(url: str) -> None:
    """Show the view's address in the browser without reloading (tests replace this)."""
    ui.navigate.history.replace(url)


class BackgroundJobsView(LiveView):
    def __init__(self, ctx: PageContext, request: Request) -> None:
        super().__init__(ctx)
        params = request.query_params
        status = params.get("status") or ""
        self._initial_status = status if status in batch_state.FILTERS else ""
        self._initial_q = clean_query(params.get("q")) or ""
        self._initial_sort = parse_sort(params.get("sort"), DEFAULT_SORT)

    async def build(self) -> None:
        t = self.ctx.t
        with ui.row().classes("w-full gap-2"):
            self.cards = {key: self._summary_chip(key) for key in SUMMARY_KEYS}
        with ui.row().classes("w-full items-end gap-4"):
            statuses = {batch_state.ACTIVE: t("batch_filter_active"),
                        **{s.value: t(f"batch_status_{s.value}") for s in BatchStatus}}
            self.status = status_filter(t, statuses, self._filters_changed, "status-filter",
                                        value=self._initial_status)
            self.search = (
                ui.input(t("search"), value=self._initial_q, on_change=self._filters_changed)
                .props("clearable").classes("w-64").mark("search")
            )
            ui.space()
            ui.button(t("new_batch"), icon="add", on_click=self._new_batch).mark("new-batch").set_visibility(
                self.ctx.can_write)  # a viewer reads only
        self.table = BatchTable(self.ctx, page_size=PAGE_SIZE, sort=self._initial_sort,
                                on_sort=lambda _: self._filters_changed(), on_change=self._poke)
        await self._follow([EventName.BACKGROUND_JOB_PROGRESS.value], name="background jobs")
        ui.timer(TICK_S, self._tick)  # local: moves age and duration, reads nothing

    def _summary_chip(self, key: str) -> ui.label:
        """A count per state; a click filters by it (전체: no filter)."""
        t = self.ctx.t
        label = {"total": t("batch_summary_total"), batch_state.ACTIVE: t("batch_summary_active")}.get(key) or t(
            f"batch_status_{key}")
        with (
            ui.button(on_click=lambda: self.status.set_value("" if key == "total" else key))
            .props("outline dense no-caps").classes("px-2").mark(f"summary-{key}")
        ):
            ui.label(label).classes("text-sm")
            return ui.label("0").classes("ml-2 text-base font-bold tabular-nums").mark(f"summary-{key}-value")

    def _query(self) -> str | None:
        return clean_query(self.search.value)

    def _filters_changed(self) -> None:
        set_address(address(self.status.value or None, self._query(), self.table.sort))
        self._poke()

    async def refresh(self) -> None:
        """One read: the SQL filters, searches, sorts and pages (and counts what matches), so
        any number of jobs shows whole, a page at a time."""
        key = self.status.value or ""
        listing = await self.ctx.services.batch.list_jobs(
            statuses=batch_state.FILTERS.get(key), q=self._query(), sort=self.table.sort, limit=self.table.limit)
        counts = summary_counts(listing.summary)
        for name, label in self.cards.items():
            label.set_text(str(counts[name]))
        total = listing.matching
        self.table.show(listing.jobs, total, more=total is not None and total > len(listing.jobs))
        for row in self.table:
            await row.refresh_detail()

    def _tick(self) -> None:
        now = dt.datetime.now(dt.UTC)
        for row in self.table:
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
        async with frame(request, "nav_background", wide=True) as ctx:
            await BackgroundJobsView(ctx, request).build()
