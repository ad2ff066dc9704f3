"""Jobs page (작업 관리): counts per state, status filter and search, the jobs table
(jobs_table.py) and the new-job dialog. Follows job_progress / job_deleted events; never
polled by the browser.

The view lives in the address (`/?status=paused&q=lobby&sort=-created`): a link shows the
same filter, search and order, and a reload keeps them.
"""

from __future__ import annotations

import datetime as dt
import re
import urllib.parse

from fastapi import Request
from nicegui import ui

from jobsys.events import EventName
from jobsys.models import TITLE_MAX_CHARS, Job, JobList, JobStatus
from nicegui_app.pages import job_progress
from nicegui_app.pages.frame import PageContext, frame
from nicegui_app.pages.guard import guarded_page
from nicegui_app.pages.jobs_table import JobsTable, parse_sort
from nicegui_app.pages.new_job_dialog import NewJobDialog
from nicegui_app.pages.rows import LIMIT_MAX, LiveView, status_filter

PAGE_SIZE = 25  # rows rendered at first (keeps a 1,000-job first render short); "더 보기" adds more
DEFAULT_SORT = "-created"  # the order list_jobs reads in: no sorting here
SUMMARY_KEYS = ("total", "scheduled", "active", "paused", "completed", "incomplete", "cancelled")
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")


def clean_query(text: str | None) -> str | None:
    cleaned = _CONTROL_RE.sub("", text or "").strip()[:TITLE_MAX_CHARS]
    return cleaned or None


def address(status: str | None, q: str | None, sort: str) -> str:
    """The page's address for this view (defaults left out, so the plain page stays "/")."""
    params = {"status": status, "q": q, "sort": None if sort == DEFAULT_SORT else sort}
    query = urllib.parse.urlencode({key: value for key, value in params.items() if value})
    return "/?" + query if query else "/"


def set_address(url: str) -> None:
    """Show the view's address in the browser without reloading (tests replace this)."""
    ui.navigate.history.replace(url)


def ordered(jobs: list[Job], sort: str) -> list[Job]:
    """Sorted by a column; rows without a value (not started, not ended) come last either way."""
    key, descending = sort.removeprefix("-"), sort.startswith("-")
    now = dt.datetime.now(dt.timezone.utc)
    keyed = [(job_progress.sort_value(key, job, now), job) for job in jobs]
    present = sorted((item for item in keyed if item[0][0] == 0), key=lambda item: item[0][1],  # type: ignore[arg-type,return-value]
                     reverse=descending)
    return [job for _, job in present] + [job for value, job in keyed if value[0] == 1]


class JobsView(LiveView):
    def __init__(self, ctx: PageContext, request: Request) -> None:
        super().__init__(ctx)
        params = request.query_params
        status = params.get("status") or ""
        self._initial_status = status if status in {s.value for s in JobStatus} else ""
        self._initial_q = clean_query(params.get("q")) or ""
        self._initial_sort = parse_sort(params.get("sort"), DEFAULT_SORT)

    async def build(self) -> None:
        t = self.ctx.t
        with ui.row().classes("w-full gap-2"):
            self.cards = {key: self._summary_chip(key) for key in SUMMARY_KEYS}
        with ui.row().classes("w-full items-end gap-4"):
            statuses = {s.value: t(f"job_status_{s.value}") for s in JobStatus}
            self.status = status_filter(t, statuses, self._filters_changed, "status-filter",
                                        value=self._initial_status)
            self.search = (
                ui.input(t("search"), value=self._initial_q, on_change=self._filters_changed)
                .props("clearable").classes("w-64").mark("search")
            )
            ui.space()
            if self.ctx.can_write:
                ui.button(t("new_job"), icon="add", on_click=self._new_job).mark("new-job")
        self.table = JobsTable(self.ctx, page_size=PAGE_SIZE, sort=self._initial_sort,
                               on_sort=lambda _: self._filters_changed(), on_change=self._poke)
        await self._follow([EventName.JOB_PROGRESS.value, EventName.JOB_DELETED.value], name="jobs list")

    def _summary_chip(self, key: str) -> ui.label:
        """A count per state; a click filters by it (총 작업: no filter)."""
        label_key = "summary_total" if key == "total" else f"job_status_{key}"
        with (
            ui.button(on_click=lambda: self.status.set_value("" if key == "total" else key))
            .props("outline dense no-caps").classes("px-2").mark(f"summary-{key}")
        ):
            ui.label(self.ctx.t(label_key)).classes("text-sm")
            return ui.label("0").classes("ml-2 text-base font-bold tabular-nums").mark(f"summary-{key}-value")

    def _query(self) -> str | None:
        return clean_query(self.search.value)

    def _filters_changed(self) -> None:
        set_address(address(self.status.value or None, self._query(), self.table.sort))
        self._poke()

    async def refresh(self) -> None:
        status = self.status.value or None
        q = self._query()
        limit = self.table.limit
        jobs_api = self.ctx.services.jobs
        if self.table.sort == DEFAULT_SORT:  # the database's own order: read one more to know if more follow
            requested = min(limit + 1, LIMIT_MAX)
            listing = await jobs_api.list_jobs(status=status, q=q, limit=requested)
            rows = listing.jobs
        else:  # another order: sort the first 1,000 here (list_jobs has no ORDER BY parameter)
            requested = LIMIT_MAX
            listing = await jobs_api.list_jobs(status=status, q=q, limit=requested)
            rows = ordered(listing.jobs, self.table.sort)
        for key, label in self.cards.items():
            label.set_text(str(getattr(listing.summary, key)))
        self.table.show(rows[:limit], self._total(listing, status, q, requested), more=len(rows) > limit)
        for row in self.table:
            await row.refresh_detail()

    @staticmethod
    def _total(listing: JobList, status: str | None, q: str | None, requested: int) -> int | None:
        """How many jobs match: the summary says it without a search; with one, only when all came."""
        if q is None:
            return int(getattr(listing.summary, status or "total"))
        return len(listing.jobs) if len(listing.jobs) < requested else None

    async def _new_job(self) -> None:
        created = await NewJobDialog(self.ctx).run()
        if created is not None:
            ui.notify(self.ctx.t("created", assigned=created.assigned), type="positive")
            self._poke()


def create() -> None:
    @guarded_page("/")
    async def jobs_page(request: Request) -> None:
        async with frame(request, "nav_jobs", wide=True) as ctx:
            await JobsView(ctx, request).build()
