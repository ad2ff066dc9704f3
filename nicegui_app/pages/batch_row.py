"""One AI batch as one line of the background jobs table: select box, status (with why a
pending job waits, or what in the setup must be fixed), title and model (with the offline and
Batch API badges), a segmented bar with "179/300 (59%)" and "완료 179 / 300, 실패 0", created,
started, ended or age, duration, and its actions: cancel (after one confirmation naming what
it stops), retry of the failed items (only when a retry can help), results, export, and the
side panel (batch_panel.py: settings, timeline, tokens, the log).

Rows are updated in place on every refresh, so an open panel stays open and the browser
receives only the changed properties (rows.py: what every row does). On a phone the row is a
card (frame.PHONE_TABLES): title, bar and actions take a line each, the other values are
captioned with their column's name (data-label). A viewer sees no select box, cancel or retry.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

from nicegui import ui

from jobsys.batch.models import BatchJob, BatchMode, BatchStatus, WaitReason
from nicegui_app.batch_export import ExportFormat
from nicegui_app.pages import batch_state, job_progress
from nicegui_app.pages.batch_panel import BatchPanel
from nicegui_app.pages.batch_results import ResultsDialog, download
from nicegui_app.pages.dialog import confirm
from nicegui_app.pages.frame import PageContext
from nicegui_app.pages.job_progress import MUTED_TEXT
from nicegui_app.pages.rows import when
from nicegui_app.pages.table_row import (
    TITLE_WIDTH,
    SegmentBar,
    TableRow,
    badge_style,
    ended_or_age,
    icon_button,
    set_prop,
)

PROVIDER_BATCH_STATES = {"queued", "running", "succeeded", "partially_succeeded", "failed", "cancelled", "expired"}
WARNING_TEXT = "#b45309"  # amber on white: 5.02:1
ERROR_TEXT = "#b91c1c"  # red on white: 6.47:1


def wait_key(reason: WaitReason) -> str:
    """The i18n key of a wait reason: no runner at all, or none for the job's provider."""
    return "batch_wait_no_runner" if reason.code == "no_runner" else f"batch_wait_{reason.provider}"


def wait_text(t: Callable[..., str], job: BatchJob) -> str:
    """Why a pending job is not running ("" when it is not waiting on the runners)."""
    reason = job.wait_reason if job.status is BatchStatus.PENDING else None
    if reason is None:
        return ""
    known = reason.code == "no_runner" or reason.provider in ("gemini", "openai_compatible")
    return t(wait_key(reason)) if known else reason.message


def provider_batch_text(t: Callable[..., str], job: BatchJob) -> str:
    """Batch API mode: "일괄 처리: 대기" ("" in standard mode)."""
    if job.payload.mode is not BatchMode.BATCH_API:
        return ""
    recorded = job.result.get("provider_batch")
    state = recorded.get("state") if isinstance(recorded, dict) else None
    label = t(f"batch_api_state_{state}") if state in PROVIDER_BATCH_STATES else (state or t("batch_api_not_submitted"))
    return t("batch_api_badge", state=label)


def ended_or_age_text(t: Callable[..., str], job: BatchJob, now: dt.datetime) -> str:
    return ended_or_age(t, job.completed_at, job.created_at, now)


def duration_text(t: Callable[..., str], job: BatchJob, now: dt.datetime) -> str:
    seconds = batch_state.duration_s(job, now)
    return "–" if seconds is None else job_progress.span(t, seconds)


class BatchRow(TableRow[BatchJob]):
    def __init__(self, ctx: PageContext, job: BatchJob, on_change: Callable[[], None],
                 on_select: Callable[[BatchJob, bool], None]) -> None:
        super().__init__(ctx, job, on_change)
        t = self.t
        # One tbody per job: the row and its side panel stay one element addressed by the id.
        self.card = ui.element("tbody").mark(f"batch-{job.id}")
        with self.card, ui.element("tr").classes("align-top"):
            self._select_box(on_select, "batch-select")
            with ui.element("td"):
                self.status = ui.badge(color=None).mark("batch-status")
                self.wait = ui.label().classes(f"text-xs text-[{WARNING_TEXT}] max-w-[12rem]").mark("batch-wait")
                self.fix = (ui.label().classes(f"text-xs font-medium text-[{ERROR_TEXT}] cursor-pointer")
                            .on("click", self.open_panel).mark("batch-fix"))
            with ui.element("td").classes("phone-full"):
                self.title = (ui.label().classes(f"font-medium truncate {TITLE_WIDTH} cursor-pointer")
                              .on("click", self.open_panel).mark("batch-title"))
                with self.title:
                    self.title_tip = ui.tooltip()
                with ui.row().classes("items-center gap-1 no-wrap"):
                    self.model = ui.label().classes(f"text-xs text-[{MUTED_TEXT}]").mark("batch-model")
                    self.offline = (ui.badge(t("batch_offline"), color="purple").props("outline")
                                    .tooltip(t("batch_offline_hint")).mark("batch-offline"))
                    self.provider_batch = (ui.badge(color="teal").props("outline").tooltip(t("batch_api_hint"))
                                           .mark("batch-provider-batch"))
                self.error = ui.label().classes(f"text-xs text-[{ERROR_TEXT}] truncate {TITLE_WIDTH}").mark(
                    "batch-error")
            with ui.element("td").classes("phone-full"):
                with ui.row().classes("items-center gap-2 no-wrap"):
                    self.bar = SegmentBar(t, "batch-bar", "batch_segment_")
                    self.progress = ui.label().classes("text-sm font-medium whitespace-nowrap").mark(
                        "batch-progress")
                with ui.row().classes(f"gap-x-2 gap-y-0 text-xs text-[{MUTED_TEXT}] no-wrap"):
                    self.counts = ui.label().mark("batch-counts")
                    self.running = ui.label().classes("text-[#1d4ed8]").mark("batch-running")
                    self.cancelled = ui.label().mark("batch-cancelled")
            self.created = self._cell(t("col_created"), "whitespace-nowrap", "batch-created")
            self.started = self._cell(t("col_started"), "whitespace-nowrap", "batch-started")
            self.ended = self._cell(t("col_ended"), "whitespace-nowrap", "batch-ended")
            self.duration = self._cell(t("col_duration"), "whitespace-nowrap tabular-nums", "batch-duration")
            with ui.element("td").classes("phone-full") as actions, ui.row().classes("gap-0 no-wrap"):
                self.cancel_button = icon_button(t("batch_cancel"), "stop", self.confirm_cancel, "batch-cancel",
                                                 negative=True)
                self.retry_button = icon_button(t("batch_retry"), "replay", self.retry, "batch-retry")
                icon_button(t("batch_results"), "table_view", self.results, "batch-results")
                export = icon_button(t("batch_export"), "download", lambda: None, "batch-export")
                with export, ui.menu():
                    for fmt in ExportFormat:
                        ui.menu_item(fmt.value.upper(), on_click=lambda fmt=fmt: self.export(fmt)).mark(
                            f"batch-export-{fmt.value}")
                icon_button(t("batch_open"), "chevron_right", self.open_panel, "open-batch")
            with actions:
                self.panel = BatchPanel(ctx, self)  # fixed to the screen's edge: takes no room in the cell
        self.update(job)

    def update(self, job: BatchJob) -> None:
        t = self.t
        self.job = job
        self.title.set_text(job.title)
        self.title_tip.set_text(job.title)
        set_prop(self.title, "title", job.title)  # whole on a long press or hover where tooltips do not show
        set_prop(self.select, "aria-label", t("batch_select", title=job.title))
        self.model.set_text(job.payload.model)
        self.status.set_text(t(f"batch_status_{job.status.value}"))
        self.status.style(replace=badge_style(batch_state.STATUS_BACKGROUNDS[job.status]))
        self.offline.set_visibility(job.offline)
        badge = provider_batch_text(t, job)
        self.provider_batch.set_text(badge)
        self.provider_batch.set_visibility(bool(badge))
        self.bar.show(batch_state.segments(job), job.completed_items, job.total_items)
        self.progress.set_text(batch_state.progress_text(t, job))
        self.counts.set_text(batch_state.counts_text(t, job))
        self.running.set_text(t("batch_segment_running", n=job.running_items))
        self.running.set_visibility(job.running_items > 0)
        self.cancelled.set_text(t("batch_segment_cancelled", n=job.cancelled_items))
        self.cancelled.set_visibility(job.cancelled_items > 0)
        problem = batch_state.setup_problem(job)
        self.fix.set_text(t(f"batch_fix_{problem}") if problem else "")
        self.fix.set_visibility(problem is not None)
        waiting = "" if problem is not None else wait_text(t, job)  # the fix says it better
        self.wait.set_text(waiting)
        self.wait.set_visibility(bool(waiting))
        self.error.set_text(job.error_message or "")
        self.error.set_visibility(bool(job.error_message) and problem is None)
        self.created.set_text(when(job.created_at))
        self.started.set_text(when(job.started_at))
        writer = self.ctx.can_write
        self.cancel_button.set_visibility(writer and job.can_cancel)
        self.retry_button.set_visibility(writer and batch_state.retry_helps(job))
        self.tick()

    def tick(self, now: dt.datetime | None = None) -> None:
        """Move age and duration on (the page's local timer calls this every second)."""
        now = now or dt.datetime.now(dt.UTC)
        self.ended.set_text(ended_or_age_text(self.t, self.job, now))
        self.duration.set_text(duration_text(self.t, self.job, now))

    @property
    def ticking(self) -> bool:
        return self.job.completed_at is None

    # Actions ------------------------------------------------------------------------------
    async def confirm_cancel(self) -> None:
        """Cancel stops every unfinished item at once: asked first, naming what it stops."""
        t, job = self.t, self.job
        question = t("batch_confirm_cancel", title=job.title, left=batch_state.unfinished(job),
                     done=job.completed_items)
        if await confirm(question, t("keep_running"), t("batch_cancel"), ("cancel-keep", "confirm-cancel-batch")):
            await self._act(self.ctx.services.batch.cancel_job, "batch_cancel_done")

    async def retry(self) -> None:
        await self._act(self.ctx.services.batch.retry_job, "batch_retry_done")

    async def results(self) -> None:
        await ResultsDialog(self.ctx, self.job).run()

    async def export(self, fmt: ExportFormat) -> None:
        await download(self.ctx, self.job.id, fmt)
