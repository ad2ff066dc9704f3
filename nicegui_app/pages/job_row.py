"""One job in the list: title, status, progress bar "15/20대 (75%)", counts, pause/resume and
delete, and an expansion with the per-device status.

Rows are updated in place (not rebuilt) on every refresh, so an expanded row stays
expanded and the browser receives only the changed properties (rows.py: what every row does).
"""

from __future__ import annotations

from typing import Callable

from nicegui import ui

from jobsys.errors import JobsysError, NotFound
from jobsys.models import Assignment, Job, JobStatus
from nicegui_app.pages.dialog import answer
from nicegui_app.pages.frame import PageContext
from nicegui_app.pages.rows import ItemRow

STATUS_COLORS = {
    JobStatus.ACTIVE: "primary",
    JobStatus.PAUSED: "orange",
    JobStatus.COMPLETED: "positive",
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
DETAIL_MAX_ROWS = 500  # a job on thousands of devices: show the first ones, the counters say the rest


def progress_text(t: Callable[..., str], job: Job) -> str:
    return t("progress", done=job.completed_count, target=job.target_count, pct=job.progress_percent)


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
                ui.button(t("delete"), icon="delete", on_click=self._confirm_delete).props(
                    "flat dense color=negative"
                ).mark("delete")
            self.bar = ui.linear_progress(show_value=False, size="10px").mark("job-bar")
            with ui.row().classes("w-full gap-4 text-sm"):
                self.progress = ui.label().classes("font-medium").mark("job-progress")
                self.completed = ui.label().classes("text-positive").mark("job-completed")
                self.running = ui.label().classes("text-primary").mark("job-running")
                self.failed = ui.label().classes("text-negative").mark("job-failed")
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
        self.pause_button.set_visibility(job.status is JobStatus.ACTIVE)
        self.resume_button.set_visibility(job.status is JobStatus.PAUSED)

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
                    if assignment.error:
                        ui.label(assignment.error).classes("text-negative text-xs")

    # Actions ------------------------------------------------------------------------------
    async def _pause(self) -> None:
        await self._act(self.ctx.services.jobs.pause_job)

    async def _resume(self) -> None:
        await self._act(self.ctx.services.jobs.resume_job)

    async def _confirm_delete(self) -> None:
        t = self.t
        with ui.dialog() as dialog, ui.card():
            ui.label(t("confirm_delete", title=self.job.title))
            with ui.row().classes("w-full justify-end"):
                ui.button(t("cancel"), on_click=lambda: dialog.submit(False)).props("flat").mark(
                    "confirm-cancel"
                )
                ui.button(t("delete"), on_click=lambda: dialog.submit(True)).props("color=negative").mark(
                    "confirm-delete"
                )
        if not await answer(dialog):
            return
        try:
            await self.ctx.services.jobs.delete_job(self.job.id)
            ui.notify(t("deleted"), type="positive")
        except NotFound:
            pass  # someone else deleted it first: the outcome the operator wanted
        except JobsysError as exc:
            ui.notify(exc.message, type="warning")
        self._on_change()
