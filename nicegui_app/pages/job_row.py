"""One job as one line of the jobs table: select box, status (with an incomplete job's
reason, a wait for devices or a start time under it), title and URL (truncated, whole in a
tooltip), a segmented bar with "15/20대 (75%)" and what it counts, queued runs, created,
started, ended or age, duration, and its actions: pause / resume, retry of the failed
devices, run again (clone), export (CSV), cancel and delete (each after one confirmation
naming the job), and the side panel (job_panel.py).

Rows are updated in place (not rebuilt) on every refresh, so an open panel stays open and the
browser receives only the changed properties (rows.py: what every row does).
"""

from __future__ import annotations

import datetime as dt
from typing import Callable

from nicegui import ui

from jobsys.errors import IllegalTransition, JobsysError, NotFound
from jobsys.export import job_runs_csv, job_runs_jsonl
from jobsys.models import Job, JobStatus
from nicegui_app.pages import job_progress
from nicegui_app.pages.dialog import confirm
from nicegui_app.pages.frame import PageContext
from nicegui_app.pages.job_panel import JobPanel
from nicegui_app.pages.job_progress import STATUS_BACKGROUNDS
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
from nicegui_app.server_errors import error_text

RETRYABLE = (JobStatus.ACTIVE, JobStatus.PAUSED, JobStatus.INCOMPLETE)  # retry_job refuses the others
CANCELLABLE = (JobStatus.ACTIVE, JobStatus.PAUSED, JobStatus.SCHEDULED)
PAUSABLE = (JobStatus.ACTIVE, JobStatus.SCHEDULED)


def progress_text(t: Callable[..., str], job: Job) -> str:
    return t("progress", done=job.completed_count, target=job.target_count, pct=job.progress_percent)


def counts_text(t: Callable[..., str], job: Job) -> str:
    """"완료 179 / 300, 실패 0": what the percentage counts, and what failed beside it."""
    return t("progress_counts", done=job.completed_count, target=job.target_count, failed=job.failed_count)


def status_text(t: Callable[..., str], status: JobStatus) -> str:
    return t(f"job_status_{status.value}")


def end_text(t: Callable[..., str], job: Job) -> str:
    """"미완료 – 연결된 기기 부족" for an incomplete job ("" for any other)."""
    if job.status is not JobStatus.INCOMPLETE:
        return ""
    if job.end_reason is None:
        return t("status_incomplete")
    return t("incomplete_reason", reason=t(f"end_{job.end_reason.value}"))


def shortfall_text(t: Callable[..., str], job: Job) -> str:
    """"완료 18, 실패 2, 2대 부족" for an incomplete job ("" for any other)."""
    if job.status is not JobStatus.INCOMPLETE:
        return ""
    short = max(job.target_count - job.completed_count, 0)
    return t("incomplete_numbers", completed=job.completed_count, failed=job.failed_count, short=short)


def schedule_text(t: Callable[..., str], job: Job) -> str:
    """"예약: 09:00:00": a scheduled job's start time ("" otherwise)."""
    if job.status is JobStatus.SCHEDULED and job.start_at is not None:
        return t("scheduled_at", at=when(job.start_at))
    return ""


def waiting_text(t: Callable[..., str], job: Job) -> str:
    """"기기 N대 부족 – 대기 중" while an active job waits for devices ("" otherwise)."""
    if job.status is JobStatus.ACTIVE and (job.waiting_for_devices or 0) > 0:
        return t("waiting_for_devices", n=job.waiting_for_devices)
    return ""


def ended_or_age_text(t: Callable[..., str], job: Job, now: dt.datetime) -> str:
    return ended_or_age(t, job.ended_at, job.created_at, now)


class JobRow(TableRow[Job]):
    def __init__(self, ctx: PageContext, job: Job, on_change: Callable[[], None],
                 on_select: Callable[[Job, bool], None]) -> None:
        super().__init__(ctx, job, on_change)
        t = self.t
        # One tbody per job: the row and its side panel (in the last cell, fixed to the screen's
        # edge) stay one element that tests and updates address by the job's id.
        self.card = ui.element("tbody").mark(f"job-{job.id}")
        with self.card, ui.element("tr").classes("align-top"):
            self._select_box(on_select, "job-select")
            with ui.element("td"):
                self.status = ui.badge(color=None).mark("job-status")  # no Quasar colour class: ours holds
                self.end_reason = ui.label().classes("text-xs font-medium text-[#b91c1c]").mark("job-end-reason")
                self.waiting = ui.label().classes("text-xs text-[#b45309]").mark("job-waiting")
                self.schedule = ui.label().classes("text-xs text-[#4b5563]").mark("job-schedule")
            with ui.element("td").classes("phone-full"):
                self.title = (
                    ui.label().classes(f"font-medium truncate {TITLE_WIDTH} cursor-pointer")
                    .on("click", self.open_panel).mark("job-title")
                )
                self.url = ui.label().classes(f"text-xs text-[#4b5563] truncate {TITLE_WIDTH}").mark("job-url")
                with self.title:
                    self.title_tip = ui.tooltip()
                with self.url:
                    self.url_tip = ui.tooltip()
            with ui.element("td").classes("phone-full"):
                with ui.row().classes("items-center gap-2 no-wrap"):
                    self.bar = SegmentBar(t, "job-bar", "segment_")
                    self.progress = ui.label().classes("text-sm font-medium whitespace-nowrap").mark(
                        "job-progress")
                with ui.row().classes("gap-x-2 gap-y-0 text-xs text-[#4b5563] no-wrap"):
                    self.counts = ui.label().mark("job-counts")
                    self.running = ui.label().classes("text-[#1d4ed8]").mark("job-running")
                    self.cancelled = ui.label().mark("job-cancelled")
                self.shortfall = ui.label().classes("text-xs text-[#4b5563]").mark("job-shortfall")
            self.queued = self._cell(t("col_queued"), "text-right tabular-nums", "job-queued")
            self.priority = self._cell(t("col_priority"), "text-right tabular-nums", "job-priority")
            self.created = self._cell(t("col_created"), "whitespace-nowrap", "job-created")
            self.started = self._cell(t("col_started"), "whitespace-nowrap", "job-started")
            self.ended = self._cell(t("col_ended"), "whitespace-nowrap", "job-ended")
            self.duration = self._cell(t("col_duration"), "whitespace-nowrap tabular-nums", "job-duration")
            with (ui.element("td").classes("phone-full") as self._actions_cell,
                  ui.row().classes("gap-0 no-wrap").props('role="group"') as self._actions):
                self._actions.props["aria-label"] = t("job_actions")
                self.pause_button = icon_button(t("pause"), "pause", self._pause, "pause")
                self.resume_button = icon_button(t("resume"), "play_arrow", self._resume, "resume")
                self.retry_button = icon_button(t("retry_failed"), "replay", self._retry, "retry-failed")
                clone = icon_button(t("run_again"), "content_copy", self._clone, "run-again")
                icon_button(t("export"), "download", self.export_csv, "export")
                self.cancel_button = icon_button(t("cancel_job"), "stop", self.confirm_cancel, "cancel-job",
                                                 negative=True)
                delete = icon_button(t("delete"), "delete", self.confirm_delete, "delete", negative=True)
                icon_button(t("open_panel"), "chevron_right", self.open_panel, "open-panel")
                # A viewer reads and exports only: the buttons the server would refuse are not shown.
                for button in (clone, delete):
                    button.set_visibility(ctx.can_write)
            with self._actions_cell:
                self.panel = JobPanel(ctx, self)  # fixed to the screen's edge: takes no room in the cell
        self.update(job)

    def update(self, job: Job) -> None:
        t = self.t
        self.job = job
        now = dt.datetime.now(dt.timezone.utc)
        self.title.set_text(job.title)
        self.title_tip.set_text(job.title)
        set_prop(self.title, "title", job.title)  # whole on a long press or hover where tooltips do not show
        self.url.set_text(job.target_url)
        self.url_tip.set_text(job.target_url)
        set_prop(self.url, "title", job.target_url)
        set_prop(self.select, "aria-label", t("select_job", title=job.title))
        self.status.set_text(status_text(t, job.status))
        self.status.style(replace=badge_style(STATUS_BACKGROUNDS[job.status]))
        self.bar.show(job_progress.segments(job), job.completed_count, job.target_count)
        self.progress.set_text(progress_text(t, job))
        self.counts.set_text(counts_text(t, job))
        self.running.set_text(t("count_running_now", n=job.running_count))
        self.running.set_visibility(job.running_count > 0)
        self.cancelled.set_text(t("count_cancelled", n=job.cancelled_count))
        self.cancelled.set_visibility(job.cancelled_count > 0)
        for label, text in (
            (self.end_reason, end_text(t, job)),
            (self.shortfall, shortfall_text(t, job)),
            (self.waiting, waiting_text(t, job)),
            (self.schedule, schedule_text(t, job)),
        ):
            label.set_text(text)
            label.set_visibility(bool(text))
        duration = job_progress.duration_s(job, now)
        for cell, text in (
            (self.queued, str(job_progress.queued(job))),
            (self.priority, str(job.priority)),
            (self.created, when(job.created_at)),
            (self.started, when(job_progress.started_at(job))),
            (self.ended, ended_or_age_text(t, job, now)),
            (self.duration, "–" if duration is None else job_progress.span(t, duration)),
        ):
            cell.set_text(text)
        writer = self.ctx.can_write
        self.pause_button.set_visibility(writer and job.status in PAUSABLE)
        self.resume_button.set_visibility(writer and job.status is JobStatus.PAUSED)
        self.retry_button.set_visibility(writer and job.failed_count > 0 and job.status in RETRYABLE)
        self.cancel_button.set_visibility(writer and job.status in CANCELLABLE)

    # Actions ------------------------------------------------------------------------------
    async def _pause(self) -> None:
        await self._act(self.ctx.services.jobs.pause_job)

    async def _resume(self) -> None:
        await self._act(self.ctx.services.jobs.resume_job)

    async def _retry(self) -> None:
        t = self.t
        try:
            retried = await self.ctx.services.jobs.retry_job(self.job.id)
            ui.notify(t("retry_done", n=retried.retried), type="positive")
        except IllegalTransition:  # nothing failed (any more), or the job has ended meanwhile
            ui.notify(t("retry_nothing"), type="warning")
        except JobsysError as exc:
            ui.notify(error_text(self.t, exc), type="warning")
        self._on_change()

    async def _clone(self) -> None:
        try:
            created = await self.ctx.services.jobs.clone_job(self.job.id)
            ui.notify(self.t("cloned", assigned=created.assigned), type="positive")
        except JobsysError as exc:  # e.g. no device connected for an all-devices job
            ui.notify(error_text(self.t, exc), type="warning")
        self._on_change()

    async def export_csv(self) -> None:
        await self._export("csv")

    async def export_jsonl(self) -> None:
        await self._export("jsonl")

    async def _export(self, file_format: str) -> None:
        """The job's runs, built here and sent to this browser (it has no API token; the same
        file as GET /api/jobs/{id}/export)."""
        try:
            rows = await self.ctx.services.jobs.export_job_runs(self.job.id)
        except JobsysError as exc:
            ui.notify(error_text(self.t, exc), type="warning")
            return
        if file_format == "jsonl":
            ui.download.content(job_runs_jsonl(rows).encode("utf-8"), f"job-{self.job.id}.jsonl",
                                "application/jsonl; charset=utf-8")
        else:
            ui.download.content(job_runs_csv(rows).encode("utf-8"), f"job-{self.job.id}.csv",
                                "text/csv; charset=utf-8")

    async def confirm_cancel(self) -> None:
        """Cancel keeps the job and every run for the record (delete is what removes them)."""
        t = self.t
        question = t("confirm_cancel_job", title=self.job.title)
        if await confirm(question, t("keep_running"), t("cancel_job"), ("cancel-keep", "confirm-cancel-job")):
            await self._act(self.ctx.services.jobs.cancel_job, "cancelled_job")

    async def confirm_delete(self) -> None:
        t = self.t
        question = t("confirm_delete", title=self.job.title)
        if not await confirm(question, t("cancel"), t("delete"), ("confirm-cancel", "confirm-delete")):
            return
        try:
            await self.ctx.services.jobs.delete_job(self.job.id)
            ui.notify(t("deleted"), type="positive")
        except NotFound:
            pass  # someone else deleted it first: the outcome the operator wanted
        except JobsysError as exc:
            ui.notify(error_text(self.t, exc), type="warning")
        self._on_change()
