"""The jobs table: one line per job (job_row.py), sortable column headers, a select box per
row and for all rows, the bulk bar (pause / resume / cancel / delete the selection after one
confirmation that says how many jobs it affects and names them), "25 / 153" and "더 보기".

A plain HTML table (Quasar's q-markup-table) of NiceGUI elements rather than ui.table / AG
Grid: each row is updated in place on every live refresh (only changed properties reach the
browser, an open side panel stays open), its buttons are real elements with accessible names,
and the page stays bounded because rows come a page at a time.
"""

from __future__ import annotations

import dataclasses
import uuid
from typing import Awaitable, Callable, Iterator

from nicegui import ui

from jobsys.errors import JobsysError, NotFound
from jobsys.models import Job, JobStatus
from nicegui_app.pages.dialog import confirm
from nicegui_app.pages.frame import PageContext
from nicegui_app.pages.job_progress import MUTED_TEXT
from nicegui_app.pages.job_row import CANCELLABLE, PAUSABLE, JobRow
from nicegui_app.pages.rows import LIMIT_MAX

# Columns: (label key, sort key or None). The first is the select box.
COLUMNS: tuple[tuple[str, str | None], ...] = (
    ("col_status", "status"),
    ("col_job", "title"),
    ("col_progress", "progress"),
    ("col_queued", "queued"),
    ("col_created", "created"),
    ("col_started", "started"),
    ("col_ended", "ended"),
    ("col_duration", "duration"),
    ("col_actions", None),
)
SORT_KEYS = tuple(key for _, key in COLUMNS if key is not None)
ASCENDING_FIRST = ("title", "status")  # a first click sorts these A→Z; times and numbers newest / most first
DETAILS_MAX = 10  # titles named in a bulk confirmation; the rest are counted


@dataclasses.dataclass(frozen=True)
class BulkAction:
    """A bulk button: its key (labels, marks, the call), the statuses it applies to, its look."""

    key: str
    statuses: tuple[JobStatus, ...]
    icon: str
    negative: bool = False


BULK_ACTIONS = (
    BulkAction("pause", PAUSABLE, "pause"),
    BulkAction("resume", (JobStatus.PAUSED,), "play_arrow"),
    BulkAction("cancel", CANCELLABLE, "stop", negative=True),
    BulkAction("delete", tuple(JobStatus), "delete", negative=True),
)


def parse_sort(value: str | None, default: str) -> str:
    """"-created" (newest first) or "title": a known column, with "-" for descending."""
    key = (value or "").removeprefix("-")
    return value if value and key in SORT_KEYS else default


class JobsTable:
    def __init__(self, ctx: PageContext, *, page_size: int, sort: str, on_sort: Callable[[str], None],
                 on_change: Callable[[], None]) -> None:
        self.ctx = ctx
        self.t = ctx.t
        self._page_size = page_size
        self._on_sort = on_sort
        self._on_change = on_change
        self.sort = sort
        self.limit = page_size
        self.by_id: dict[uuid.UUID, JobRow] = {}
        self._syncing = False  # the select-all box is being set from the rows, not by the operator
        t = self.t
        with ui.row().classes("w-full items-center gap-2 min-h-10").mark("bulk-bar"):
            self.bulk_count = ui.label().classes("text-sm font-medium").mark("bulk-count")
            self.bulk_buttons: list[ui.button] = []
            for action in BULK_ACTIONS:
                button = ui.button(t(f"bulk_{action.key}"), icon=action.icon,
                                   on_click=lambda a=action: self._bulk(a)).props(
                    "outline dense" + (" color=negative" if action.negative else "")).mark(f"bulk-{action.key}")
                self.bulk_buttons.append(button)
            self.bulk_clear = ui.button(t("bulk_clear"), on_click=self._clear_selection).props(
                "flat dense").mark("bulk-clear")
        with (
            ui.element("div").classes("w-full overflow-x-auto"),  # narrow screens scroll the table sideways
            ui.element("q-markup-table").props("dense flat bordered").classes("w-full").mark("job-list") as table,
        ):
            self.table = table
            self._header()
        self.empty = ui.label(t("no_jobs")).classes(f"text-[{MUTED_TEXT}]").mark("no-jobs")
        with ui.row().classes("w-full items-center gap-4"):
            self.count = ui.label().classes(f"text-sm text-[{MUTED_TEXT}]").mark("jobs-count")
            self.more = ui.button(t("more_jobs"), on_click=self._show_more).props("flat").mark("more-jobs")
        self._show_sort()
        self._selection_changed()

    def _header(self) -> None:
        """The select-all box and a sort button per sortable column."""
        t = self.t
        with ui.element("thead") as self.thead, ui.element("tr"):
            with ui.element("th"):
                self.select_all = ui.checkbox(on_change=self._select_all_changed).props("dense").mark(
                    "select-all")
                self.select_all.props["aria-label"] = t("select_all")
            self.headers: dict[str, ui.button] = {}
            for label_key, sort_key in COLUMNS:
                with ui.element("th").classes("text-left"):
                    if sort_key is None:
                        ui.label(t(label_key))
                    else:
                        self.headers[sort_key] = ui.button(
                            t(label_key), on_click=lambda k=sort_key: self._sort_clicked(k)
                        ).props("flat dense no-caps size=sm").mark(f"sort-{sort_key}")

    def __iter__(self) -> Iterator[JobRow]:
        return iter(list(self.by_id.values()))

    # Rows ---------------------------------------------------------------------------------
    def show(self, jobs: list[Job], total: int | None, more: bool) -> None:
        """Update rows in place: new ones appear, gone ones go, order follows `jobs`."""
        wanted = {job.id for job in jobs}
        for job_id in [job_id for job_id in self.by_id if job_id not in wanted]:
            self.by_id.pop(job_id).delete()
        for job in jobs:
            row = self.by_id.get(job.id)
            if row is None:
                with self.table:
                    self.by_id[job.id] = JobRow(self.ctx, job, on_change=self._on_change,
                                                on_select=self._row_selected)
            else:
                row.update(job)
        order = [self.thead] + [self.by_id[job.id].card for job in jobs]
        if list(self.table.default_slot.children) != order:
            for index, element in enumerate(order):
                element.move(self.table, target_index=index)
        self.empty.set_visibility(not jobs)
        shown = len(jobs)
        if total is None:
            self.count.set_text(self.t("jobs_count_more", shown=shown))
        else:
            self.count.set_text(self.t("jobs_count", shown=shown, total=total))
        self.count.set_visibility(bool(jobs))
        self.more.set_visibility(more and self.limit < LIMIT_MAX)
        self._selection_changed()

    async def _show_more(self) -> None:
        self.limit = min(self.limit + self._page_size, LIMIT_MAX)
        self._on_change()

    # Sorting ------------------------------------------------------------------------------
    def _sort_clicked(self, key: str) -> None:
        current = self.sort.removeprefix("-")
        if key == current:
            self.sort = key if self.sort.startswith("-") else f"-{key}"
        else:
            self.sort = key if key in ASCENDING_FIRST else f"-{key}"
        self._show_sort()
        self._on_sort(self.sort)

    def _show_sort(self) -> None:
        current, descending = self.sort.removeprefix("-"), self.sort.startswith("-")
        for key, button in self.headers.items():
            if key == current:
                button.props(f"icon-right={'arrow_downward' if descending else 'arrow_upward'}")
                button.props["aria-sort"] = "descending" if descending else "ascending"
            else:
                button.props(remove="icon-right")
                button.props.pop("aria-sort", None)

    # Selection and bulk actions -------------------------------------------------------------
    def selected(self) -> list[Job]:
        return [row.job for row in self.by_id.values() if row.selected]

    def _row_selected(self, job: Job, value: bool) -> None:
        if not self._syncing:
            self._selection_changed()

    def _select_all_changed(self) -> None:
        if not self._syncing:
            self._select_every_row(bool(self.select_all.value))

    def _clear_selection(self) -> None:
        self._select_every_row(False)

    def _select_every_row(self, value: bool) -> None:
        self._syncing = True  # one summary at the end, not one per row
        try:
            for row in self.by_id.values():
                row.set_selected(value)
        finally:
            self._syncing = False
        self._selection_changed()

    def _selection_changed(self) -> None:
        chosen = self.selected()
        self.bulk_count.set_text(self.t("bulk_selected", n=len(chosen)) if chosen else self.t("bulk_hint"))
        for button in (*self.bulk_buttons, self.bulk_clear):
            button.set_enabled(bool(chosen))
        self._syncing = True
        try:
            self.select_all.set_value(bool(self.by_id) and len(chosen) == len(self.by_id))
        finally:
            self._syncing = False

    async def _bulk(self, action: BulkAction) -> None:
        t = self.t
        chosen = self.selected()
        affected = [job for job in chosen if job.status in action.statuses]
        if not affected:
            ui.notify(t(f"bulk_none_{action.key}"), type="warning")
            return
        question = t(f"bulk_confirm_{action.key}", n=len(affected))
        skipped = len(chosen) - len(affected)
        if skipped:
            question += " " + t("bulk_skipped", n=skipped)
        details = [f"• {job.title}" for job in affected[:DETAILS_MAX]]
        if len(affected) > DETAILS_MAX:
            details.append(t("bulk_and_more", n=len(affected) - DETAILS_MAX))
        confirm_label = t(f"bulk_{action.key}_n", n=len(affected))
        if not await confirm(question, t("close"), confirm_label, ("bulk-dismiss", "bulk-confirm"), details):
            return
        done, problems = 0, []
        call = self._call(action.key)
        for job in affected:
            try:
                await call(job.id)
                done += 1
            except NotFound:  # deleted elsewhere first: for a delete, what was asked for
                if action.key == "delete":
                    done += 1
                else:
                    problems.append(t("bulk_gone"))
            except JobsysError as exc:  # e.g. it ended a moment ago
                problems.append(exc.message)
        ui.notify(t(f"bulk_done_{action.key}", n=done), type="positive" if not problems else "warning")
        if problems:
            ui.notify(t("bulk_failed", n=len(problems), message=problems[0]), type="warning")
        self._clear_selection()
        self._on_change()

    def _call(self, key: str) -> Callable[[uuid.UUID], Awaitable[object]]:
        jobs = self.ctx.services.jobs
        return {"pause": jobs.pause_job, "resume": jobs.resume_job, "cancel": jobs.cancel_job,
                "delete": jobs.delete_job}[key]
