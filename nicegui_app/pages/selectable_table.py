"""What the dense job tables share (device jobs: jobs_table.py, AI batches: batch_table.py):
rows updated in place, sortable column headers, a select box per row and for all rows, the
bulk bar (one confirmation naming what it affects, then the action job by job), "25 / 153"
and "더 보기".

A plain HTML table (Quasar's q-markup-table) of NiceGUI elements rather than ui.table / AG
Grid: each row is updated in place on every live refresh (only changed properties reach the
browser, an open side panel stays open), its buttons are real elements with accessible names,
and the page stays bounded because rows come a page at a time. Under 600 px the table is a
card per row (frame.PHONE_TABLES); the header stays for select all and sorting.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Awaitable, Callable, Iterator
from typing import Generic, Protocol, TypeVar

from nicegui import ui

from jobsys.errors import JobsysError, NotFound
from nicegui_app.pages.dialog import confirm
from nicegui_app.pages.frame import PageContext
from nicegui_app.pages.job_progress import MUTED_TEXT
from nicegui_app.pages.rows import LIMIT_MAX, Listed
from nicegui_app.server_errors import error_text

Columns = tuple[tuple[str, str | None], ...]  # (label key, sort key or None)
ASCENDING_FIRST = ("title", "status")  # a first click sorts these A→Z; times and numbers newest / most first
DETAILS_MAX = 10  # jobs named in a bulk confirmation; the rest are counted


class Titled(Listed, Protocol):
    @property
    def title(self) -> str: ...


T = TypeVar("T", bound=Titled)


class SelectableRow(Protocol[T]):
    """What the table needs of a row (job_row.JobRow, batch_row.BatchRow)."""

    job: T
    card: ui.element

    @property
    def selected(self) -> bool: ...

    def set_selected(self, value: bool) -> None: ...

    def update(self, job: T) -> None: ...

    def delete(self) -> None: ...


RowT = TypeVar("RowT", bound=SelectableRow)  # type: ignore[type-arg]


@dataclasses.dataclass(frozen=True)
class BulkAction(Generic[T]):
    """A bulk button: its key (labels, marks, the call), which jobs it applies to, its look."""

    key: str
    icon: str
    applies: Callable[[T], bool]
    negative: bool = False


@dataclasses.dataclass(frozen=True)
class TableText:
    """The i18n keys and test marks that tell the tables apart."""

    bulk: str  # prefix of the bulk keys: {bulk}{action}, {bulk}hint, {bulk}none_…, {bulk}confirm_…, {bulk}done_…
    empty: str  # "no jobs" key
    count: str  # "25 / 153" key; {count}_more when the total is not known
    list_mark: str
    empty_mark: str
    count_mark: str
    more_mark: str


def parse_sort(value: str | None, default: str, keys: tuple[str, ...]) -> str:
    """"-created" (newest first) or "title": a known column, with "-" for descending."""
    key = (value or "").removeprefix("-")
    return value if value and key in keys else default


def sort_keys(columns: Columns) -> tuple[str, ...]:
    return tuple(key for _, key in columns if key is not None)


class SelectableTable(Generic[T, RowT]):
    """The table; a subclass names its columns, text, bulk actions, its row type and what each
    bulk action calls."""

    ROW: Callable[..., RowT]  # (ctx, job, on_change=, on_select=)
    COLUMNS: Columns
    TEXT: TableText
    BULK_ACTIONS: tuple[BulkAction[T], ...]

    def __init__(self, ctx: PageContext, *, page_size: int, sort: str, on_sort: Callable[[str], None],
                 on_change: Callable[[], None]) -> None:
        self.ctx = ctx
        self.t = ctx.t
        self._page_size = page_size
        self._on_sort = on_sort
        self._on_change = on_change
        self.sort = sort
        self.limit = page_size
        self.by_id: dict[uuid.UUID, RowT] = {}
        self._syncing = False  # the select-all box is being set from the rows, not by the operator
        t, text = self.t, self.TEXT
        with ui.row().classes("w-full items-center gap-2 min-h-10").mark("bulk-bar") as self.bulk_bar:
            self.bulk_count = ui.label().classes("text-sm font-medium break-keep").mark("bulk-count")  # Korean wraps by word
            self.bulk_buttons: list[ui.button] = []
            for action in self.BULK_ACTIONS:
                self.bulk_buttons.append(
                    ui.button(t(f"{text.bulk}{action.key}"), icon=action.icon, on_click=lambda a=action: self._bulk(a))
                    .props("outline dense" + (" color=negative" if action.negative else "")).mark(f"bulk-{action.key}"))
            self.bulk_clear = ui.button(t("bulk_clear"), on_click=self._clear_selection).props("flat dense").mark(
                "bulk-clear")
        self.bulk_bar.set_visibility(ctx.can_write)  # a viewer changes nothing: no selection, no bulk bar
        with (
            ui.element("div").classes("w-full overflow-x-auto"),  # narrow screens scroll the table sideways
            ui.element("q-markup-table").props("dense flat bordered").classes("w-full stack-on-phone keep-head")
            .mark(text.list_mark) as table,
        ):
            self.table = table
            self._header()
        self.empty = ui.label(t(text.empty)).classes(f"text-[{MUTED_TEXT}]").mark(text.empty_mark)
        with ui.row().classes("w-full items-center gap-4"):
            self.count = ui.label().classes(f"text-sm text-[{MUTED_TEXT}]").mark(text.count_mark)
            self.more = ui.button(t("more_jobs"), on_click=self._show_more).props("flat").mark(text.more_mark)
        self._show_sort()
        self._selection_changed()

    # What a subclass says -----------------------------------------------------------------
    def _call(self, key: str) -> Callable[[uuid.UUID], Awaitable[object]]:
        raise NotImplementedError

    def _question(self, action: BulkAction[T], affected: list[T], skipped: int) -> tuple[str, list[str]]:
        """The one confirmation: how many jobs, the jobs by name, what is left out."""
        t = self.t
        question = t(f"{self.TEXT.bulk}confirm_{action.key}", n=len(affected), **self._counts(action, affected))
        if skipped:
            question += " " + t("bulk_skipped", n=skipped)
        details = [self._detail(job) for job in affected[:DETAILS_MAX]]
        if len(affected) > DETAILS_MAX:
            details.append(t("bulk_and_more", n=len(affected) - DETAILS_MAX))
        return question, details

    def _counts(self, action: BulkAction[T], affected: list[T]) -> dict[str, int]:
        """More numbers for the question (none by default)."""
        return {}

    def _detail(self, job: T) -> str:
        return f"• {job.title}"

    def _gone(self, action: BulkAction[T]) -> str | None:
        """What a job deleted meanwhile means for `action`: a problem to report, or None when
        it is what was asked for."""
        raise NotImplementedError

    # Header and rows ----------------------------------------------------------------------
    def _header(self) -> None:
        """The select-all box and a sort button per sortable column."""
        t = self.t
        with ui.element("thead") as self.thead, ui.element("tr"):
            with ui.element("th"):
                self.select_all = ui.checkbox(on_change=self._select_all_changed).props("dense").mark("select-all")
                self.select_all.set_visibility(self.ctx.can_write)
                self.select_all.props["aria-label"] = t("select_all")
            self.headers: dict[str, ui.button] = {}
            for label_key, sort_key in self.COLUMNS:
                with ui.element("th").classes("text-left" if sort_key else "text-left phone-hide"):
                    if sort_key is None:
                        ui.label(t(label_key))
                    else:
                        self.headers[sort_key] = ui.button(
                            t(label_key), on_click=lambda k=sort_key: self._sort_clicked(k)
                        ).props("flat dense no-caps size=sm").mark(f"sort-{sort_key}")

    def __iter__(self) -> Iterator[RowT]:
        return iter(list(self.by_id.values()))

    def show(self, jobs: list[T], total: int | None, more: bool) -> None:
        """Update rows in place: new ones appear, gone ones go, order follows `jobs`."""
        wanted = {job.id for job in jobs}
        for job_id in [job_id for job_id in self.by_id if job_id not in wanted]:
            self.by_id.pop(job_id).delete()
        for job in jobs:
            row = self.by_id.get(job.id)
            if row is None:
                with self.table:
                    self.by_id[job.id] = self.ROW(self.ctx, job, on_change=self._on_change,
                                                   on_select=self._row_selected)
            else:
                row.update(job)
        order = [self.thead] + [self.by_id[job.id].card for job in jobs]
        if list(self.table.default_slot.children) != order:
            for index, element in enumerate(order):
                element.move(self.table, target_index=index)
        self.empty.set_visibility(not jobs)
        shown, key = len(jobs), self.TEXT.count
        self.count.set_text(self.t(f"{key}_more", shown=shown) if total is None
                            else self.t(key, shown=shown, total=total))
        self.count.set_visibility(bool(jobs))
        self.more.set_visibility(more and self.limit < LIMIT_MAX)
        self._selection_changed()

    async def _show_more(self) -> None:
        self.limit = min(self.limit + self._page_size, LIMIT_MAX)
        self._on_change()

    # Sorting ------------------------------------------------------------------------------
    def _sort_clicked(self, key: str) -> None:
        if key == self.sort.removeprefix("-"):
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
    def selected(self) -> list[T]:
        return [row.job for row in self.by_id.values() if row.selected]

    def _row_selected(self, job: T, value: bool) -> None:
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
        self.bulk_count.set_text(self.t("bulk_selected", n=len(chosen)) if chosen else self.t(f"{self.TEXT.bulk}hint"))
        for button in (*self.bulk_buttons, self.bulk_clear):
            button.set_enabled(bool(chosen))
        self._syncing = True
        try:
            self.select_all.set_value(bool(self.by_id) and len(chosen) == len(self.by_id))
        finally:
            self._syncing = False

    async def _bulk(self, action: BulkAction[T]) -> None:
        t, prefix = self.t, self.TEXT.bulk
        chosen = self.selected()
        affected = [job for job in chosen if action.applies(job)]
        if not affected:
            ui.notify(t(f"{prefix}none_{action.key}"), type="warning")
            return
        question, details = self._question(action, affected, len(chosen) - len(affected))
        label = t(f"{prefix}{action.key}_n", n=len(affected))
        if not await confirm(question, t("close"), label, ("bulk-dismiss", "bulk-confirm"), details):
            return
        done, problems = 0, []
        call = self._call(action.key)
        for job in affected:
            try:
                await call(job.id)
                done += 1
            except NotFound:
                problem = self._gone(action)
                if problem is None:
                    done += 1
                else:
                    problems.append(problem)
            except JobsysError as exc:  # e.g. it ended a moment ago
                problems.append(error_text(t, exc))
        ui.notify(t(f"{prefix}done_{action.key}", n=done), type="positive" if not problems else "warning")
        if problems:
            ui.notify(t("bulk_failed", n=len(problems), message=problems[0]), type="warning")
        self._clear_selection()
        self._on_change()
