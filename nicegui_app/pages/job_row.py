"""One job in the list: title, status (an incomplete job's reason and shortfall, or that an
active job waits for devices), progress bar "15/20대 (75%)", counts, pause/resume, retry of
the failed devices, run again (clone), export (CSV), cancel and delete (each after a
confirmation), and an expansion with the per-device status.

Rows are updated in place (not rebuilt) on every refresh, so an expanded row stays
expanded and the browser receives only the changed properties (rows.py: what every row does).
"""

from __future__ import annotations

from typing import Callable

from nicegui import ui

from jobsys.errors import IllegalTransition, JobsysError, NotFound
from jobsys.models import Assignment, Job, JobStatus
from jobsys.export import job_runs_csv
from nicegui_app import screenshots
from nicegui_app.pages.dialog import answer
from nicegui_app.pages.frame import PageContext
from nicegui_app.pages.rows import ItemRow, when

STATUS_COLORS = {
    JobStatus.ACTIVE: "primary",
    JobStatus.PAUSED: "orange",
    JobStatus.COMPLETED: "positive",
    JobStatus.INCOMPLETE: "negative",
    JobStatus.SCHEDULED: "blue-grey",
    JobStatus.CANCELLED: "grey",
}
ASSIGNMENT_COLORS = {
    "pending": "grey",
    "paused": "orange",
    "running": "primary",
    "completed": "positive",
    "failed": "negative",
    "cancelled": "grey",
}
RETRYABLE = (JobStatus.ACTIVE, JobStatus.PAUSED, JobStatus.INCOMPLETE)  # retry_job refuses the others
CANCELLABLE = (JobStatus.ACTIVE, JobStatus.PAUSED, JobStatus.SCHEDULED)
DETAIL_MAX_ROWS = 500  # a job on thousands of devices: show the first ones, the counters say the rest


def progress_text(t: Callable[..., str], job: Job) -> str:
    return t("progress", done=job.completed_count, target=job.target_count, pct=job.progress_percent)


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
    """"예약: 09:00:00 · 우선순위 5": a scheduled job's start time and a priority other than 0.
    (`priority` is read with getattr: the field comes with the start_at / priority work.)"""
    parts = []
    start_at = getattr(job, "start_at", None)
    if job.status.value == "scheduled" and start_at is not None:
        parts.append(t("scheduled_at", at=when(start_at)))
    priority = getattr(job, "priority", 0) or 0
    if priority:
        parts.append(t("priority", n=priority))
    return " · ".join(parts)


def waiting_text(t: Callable[..., str], job: Job) -> str:
    """"기기 N대 부족 – 대기 중" while an active job waits for devices ("" otherwise)."""
    if job.status is JobStatus.ACTIVE and (job.waiting_for_devices or 0) > 0:
        return t("waiting_for_devices", n=job.waiting_for_devices)
    return ""


class JobRow(ItemRow[Job]):
    def __init__(self, ctx: PageContext, job: Job, on_change: Callable[[], None]) -> None:
        super().__init__(ctx, job, on_change)
        t = self.t
        self.card = ui.card().classes("w-full gap-2").mark(f"job-{job.id}")
        with self.card:
            with ui.row().classes("w-full items-center gap-2 no-wrap"):
                with ui.column().classes("gap-0 grow min-w-0"):
                    self.title = ui.label().classes("text-lg font-medium").mark("job-title")
                    self.url = ui.label().classes("text-xs text-gray-500 break-all")
                self.status = ui.badge().mark("job-status")
                self.pause_button = (
                    ui.button(t("pause"), icon="pause", on_click=self._pause)
                    .props("flat dense")
                    .mark("pause")
                )
                self.resume_button = (
                    ui.button(t("resume"), icon="play_arrow", on_click=self._resume)
                    .props("flat dense")
                    .mark("resume")
                )
                self.retry_button = (
                    ui.button(t("retry_failed"), icon="replay", on_click=self._retry)
                    .props("flat dense")
                    .mark("retry-failed")
                )
                ui.button(t("run_again"), icon="content_copy", on_click=self._clone).props("flat dense").mark(
                    "run-again"
                )
                ui.button(t("export"), icon="download", on_click=self._export).props("flat dense").mark(
                    "export"
                )
                self.cancel_button = (
                    ui.button(t("cancel_job"), icon="stop", on_click=self._confirm_cancel)
                    .props("flat dense color=negative")
                    .mark("cancel-job")
                )
                ui.button(t("delete"), icon="delete", on_click=self._confirm_delete).props(
                    "flat dense color=negative"
                ).mark("delete")
            self.bar = ui.linear_progress(show_value=False, size="10px").mark("job-bar")
            with ui.row().classes("w-full gap-4 text-sm"):
                self.progress = ui.label().classes("font-medium").mark("job-progress")
                self.completed = ui.label().classes("text-positive").mark("job-completed")
                self.running = ui.label().classes("text-primary").mark("job-running")
                self.failed = ui.label().classes("text-negative").mark("job-failed")
                self.end_reason = ui.label().classes("text-negative font-medium").mark("job-end-reason")
                self.shortfall = ui.label().classes("text-gray-600").mark("job-shortfall")
                self.waiting = ui.label().classes("text-orange").mark("job-waiting")
                self.schedule = ui.label().classes("text-gray-600").mark("job-schedule")
            self.expansion = (
                ui.expansion(t("per_device"), on_value_change=self._expanded)
                .classes("w-full")
                .mark("job-devices")
            )
            with self.expansion:
                self.detail = ui.column().classes("w-full gap-1")
        self.update(job)

    def update(self, job: Job) -> None:
        t = self.t
        self.job = job
        self.title.set_text(job.title)
        self.url.set_text(job.target_url)
        self.status.set_text(t(f"status_{job.status.value}"))
        self.status.props(f"color={STATUS_COLORS[job.status]}")
        self.bar.set_value(job.progress_percent / 100)
        self.progress.set_text(progress_text(t, job))
        self.completed.set_text(t("count_completed", n=job.completed_count))
        self.running.set_text(t("count_running", n=job.running_count))
        self.failed.set_text(t("count_failed", n=job.failed_count))
        for label, text in (
            (self.end_reason, end_text(t, job)),
            (self.shortfall, shortfall_text(t, job)),
            (self.waiting, waiting_text(t, job)),
            (self.schedule, schedule_text(t, job)),
        ):
            label.set_text(text)
            label.set_visibility(bool(text))
        self.pause_button.set_visibility(job.status in (JobStatus.ACTIVE, JobStatus.SCHEDULED))
        self.resume_button.set_visibility(job.status is JobStatus.PAUSED)
        self.retry_button.set_visibility(job.failed_count > 0 and job.status in RETRYABLE)
        self.cancel_button.set_visibility(job.status in CANCELLABLE)

    # Per-device status ------------------------------------------------------------------
    async def refresh_detail(self, force: bool = False) -> None:
        """Re-read the assignments if the row is open and the job changed since the last read."""
        if not self._due(self.expansion, force):
            return
        try:
            detail = await self.ctx.services.jobs.get_job(self.job.id)
        except NotFound:
            return  # deleted meanwhile: the list refresh removes the row
        self._render_assignments(detail.assignments)

    async def _expanded(self) -> None:
        await self.refresh_detail(force=True)

    def _render_assignments(self, assignments: list[Assignment]) -> None:
        t = self.t
        self.detail.clear()
        with self.detail:
            if not assignments:
                ui.label(t("no_assignments")).classes("text-gray-500")
            for assignment in assignments[:DETAIL_MAX_ROWS]:
                with (
                    ui.row()
                    .classes("w-full items-center gap-3 text-sm")
                    .mark(f"assignment-{assignment.serial}")
                ):
                    ui.label(assignment.serial).classes("font-mono")
                    ui.badge(
                        t(f"assignment_{assignment.status.value}"),
                        color=ASSIGNMENT_COLORS[assignment.status.value],
                    )
                    ui.label(t("attempt", n=assignment.attempt)).classes("text-gray-500")
                    url = screenshots.page_url((assignment.result or {}).get("evidence_path"))
                    if url is not None:
                        self._thumbnail(url, assignment.serial)
                    if assignment.error:
                        ui.label(assignment.error).classes("text-negative text-xs")

    def _thumbnail(self, url: str, serial: str) -> None:
        """A small copy of the run's screenshot (uploaded by a hub worker); a click shows it whole."""
        def show() -> None:
            with ui.dialog() as dialog, ui.card().classes("max-w-none"):
                ui.image(url).props("fit=contain").classes("w-[80vw] h-[80vh]").mark("screenshot-full")
                ui.button(self.t("close"), on_click=dialog.close).props("flat")
            dialog.on("hide", dialog.delete)
            dialog.open()

        (ui.image(url).props("fit=cover").classes("w-16 h-10 rounded cursor-pointer")
         .tooltip(self.t("screenshot")).on("click", show).mark(f"screenshot-{serial}"))

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
            ui.notify(exc.message, type="warning")
        self._on_change()

    async def _clone(self) -> None:
        try:
            created = await self.ctx.services.jobs.clone_job(self.job.id)
            ui.notify(self.t("cloned", assigned=created.assigned), type="positive")
        except JobsysError as exc:  # e.g. no device connected for an all-devices job
            ui.notify(exc.message, type="warning")
        self._on_change()

    async def _export(self) -> None:
        """The CSV of the job's runs, built here and sent to this browser (it has no API token;
        the same file as GET /api/jobs/{id}/export?format=csv)."""
        try:
            rows = await self.ctx.services.jobs.export_job_runs(self.job.id)
        except JobsysError as exc:
            ui.notify(exc.message, type="warning")
            return
        content = job_runs_csv(rows).encode("utf-8")
        ui.download.content(content, f"job-{self.job.id}.csv", "text/csv; charset=utf-8")

    async def _confirmed(
        self, question: str, confirm_key: str, dismiss_key: str, marks: tuple[str, str]
    ) -> bool:
        """Ask in a dialog; True when the operator confirmed (marks: dismiss, confirm)."""
        t = self.t
        dismiss_mark, confirm_mark = marks
        with ui.dialog() as dialog, ui.card():
            ui.label(question)
            with ui.row().classes("w-full justify-end"):
                ui.button(t(dismiss_key), on_click=lambda: dialog.submit(False)).props("flat").mark(
                    dismiss_mark
                )
                ui.button(t(confirm_key), on_click=lambda: dialog.submit(True)).props("color=negative").mark(
                    confirm_mark
                )
        return bool(await answer(dialog))

    async def _confirm_cancel(self) -> None:
        """Cancel keeps the job and every run for the record (delete is what removes them)."""
        question = self.t("confirm_cancel_job", title=self.job.title)
        marks = ("cancel-keep", "confirm-cancel-job")
        if await self._confirmed(question, "cancel_job", "keep_running", marks):
            await self._act(self.ctx.services.jobs.cancel_job, "cancelled_job")

    async def _confirm_delete(self) -> None:
        t = self.t
        question = t("confirm_delete", title=self.job.title)
        if not await self._confirmed(question, "delete", "cancel", ("confirm-cancel", "confirm-delete")):
            return
        try:
            await self.ctx.services.jobs.delete_job(self.job.id)
            ui.notify(t("deleted"), type="positive")
        except NotFound:
            pass  # someone else deleted it first: the outcome the operator wanted
        except JobsysError as exc:
            ui.notify(exc.message, type="warning")
        self._on_change()
