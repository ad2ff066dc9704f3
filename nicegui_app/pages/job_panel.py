"""The side panel of one job (a sheet at the right edge), opened from its row: settings,
timeline (created, started, paused, ended with the reason in words), the per-device table
(device, PC, status, attempt, start, end, error, screenshot thumbnail), the job's actions and
its exports.

Its contents exist only while it is open, and it re-reads the job only when the job changed
since the last read.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

from nicegui import ui

from jobsys.errors import NotFound
from jobsys.models import Assignment, Job, JobDetail, JobStatus, TargetType
from nicegui_app import screenshots
from nicegui_app.pages import job_progress
from nicegui_app.pages.frame import PageContext
from nicegui_app.pages.job_progress import RUN_BACKGROUNDS, STATUS_BACKGROUNDS
from nicegui_app.pages.rows import when
from nicegui_app.pages.side_panel import SidePanel

if TYPE_CHECKING:
    from nicegui_app.pages.job_row import JobRow

RUN_COLUMNS = ("col_device", "col_pc", "col_status", "col_attempt", "col_start", "col_end", "col_error",
               "col_screenshot")
DETAIL_MAX_ROWS = 500  # a job on thousands of devices: show the first ones, the counters say the rest


def target_text(t: Callable[..., str], job: Job) -> str:
    """"모든 기기 (20대)", "50% (10대)", "12대"."""
    if job.target_type is TargetType.ALL_DEVICES:
        return t("target_all_n", n=job.target_count)
    if job.target_type is TargetType.PERCENTAGE:
        return t("target_percent_n", pct=job.target_value, n=job.target_count)
    return t("target_count_n", n=job.target_count)


def ended_text(t: Callable[..., str], job: Job) -> str:
    """Why it ended, in words ("" while it has not)."""
    if job.status is JobStatus.COMPLETED:
        return t("ended_completed")
    if job.status is JobStatus.CANCELLED:
        return t("ended_cancelled")
    if job.status is JobStatus.INCOMPLETE:
        return t(f"end_{job.end_reason.value}") if job.end_reason else t("job_status_incomplete")
    return ""


def timeline(t: Callable[..., str], job: Job) -> list[tuple[str, str]]:
    """(what, when) for each moment the job has had, in order."""
    moments: list[tuple[str, str]] = [(t("timeline_created"), when(job.created_at))]
    if job.status is JobStatus.SCHEDULED and job.start_at is not None:
        moments.append((t("timeline_starts"), when(job.start_at)))
    started = job_progress.started_at(job)
    if started is not None:
        moments.append((t("timeline_started"), when(started)))
    if job.status is JobStatus.PAUSED and job.paused_at is not None:
        moments.append((t("timeline_paused"), when(job.paused_at)))
    if job.ended_at is not None:
        moments.append((t("timeline_ended", reason=ended_text(t, job)), when(job.ended_at)))
    return moments


class JobPanel(SidePanel):
    """The job's sheet (side_panel.py); acts through the row. While closed it holds only its
    per-device section's header."""

    def __init__(self, ctx: PageContext, row: JobRow) -> None:
        super().__init__(ctx, "job-panel", "panel")
        self.row = row
        t = self.t
        self.sheet.props["aria-label"] = t("open_panel")
        with self.sheet:
            self.body = ui.column().classes("w-full gap-3")
            self.devices = (
                ui.expansion(t("per_device"), on_value_change=self._devices_toggled)
                .classes("w-full").props("dense").mark("job-devices")
            )
            with self.devices:
                self.device_rows = ui.column().classes("w-full gap-1")

    async def open(self) -> None:
        self._show(True)
        if self.devices.value:
            await self.refresh(force=True)
        else:
            self.devices.set_value(True)  # its handler reads the job

    def close(self) -> None:
        """A closed panel holds nothing: the next open reads the job again."""
        self._show(False)
        self.body.clear()
        self.device_rows.clear()
        self._read_version = None
        self.devices.set_value(False)

    async def _devices_toggled(self) -> None:
        if not self.devices.value:
            return
        if not self.is_open:
            self._show(True)  # the per-device section is the panel's: opening it opens the panel
        await self.refresh(force=True)

    async def refresh(self, force: bool = False) -> None:
        """Re-read the job if the panel is open and the job changed since the last read."""
        if not self._due(self.row.job.updated_at, force):
            return
        try:
            detail = await self.ctx.services.jobs.get_job(self.row.job.id)
        except NotFound:
            return  # deleted meanwhile: the list refresh removes the row and its panel
        self._render(detail)

    # Rendering ----------------------------------------------------------------------------
    def _render(self, job: JobDetail) -> None:
        t = self.t
        self.body.clear()
        with self.body:
            self._header(job.title, t(f"job_status_{job.status.value}"), STATUS_BACKGROUNDS[job.status])
            self._actions(job)
            ui.label(t("progress_counts", done=job.completed_count, target=job.target_count,
                       failed=job.failed_count)).classes("text-sm").mark("panel-counts")
            ui.label(t("panel_settings")).classes("text-base font-semibold")
            with ui.grid(columns="auto 1fr").classes("gap-x-4 gap-y-1 text-sm w-full").mark("panel-settings"):
                labels = ", ".join(f"{k}={v}" for k, v in sorted(job.device_labels.items()))
                for name, value in (
                    (t("setting_url"), job.target_url),
                    (t("setting_duration"), job_progress.span(t, job.duration_sec)),
                    (t("setting_target"), target_text(t, job)),
                    (t("setting_labels"), labels or t("setting_none")),
                    (t("setting_timeout"),
                     job_progress.span(t, job.timeout_sec) if job.timeout_sec else t("setting_none")),
                    (t("setting_topup_grace"),
                     job_progress.span(t, job.topup_grace_sec) if job.topup_grace_sec is not None
                     else t("setting_default")),
                    (t("setting_max_attempts"), str(job.max_attempts)),
                ):
                    ui.label(name).classes(f"text-[{job_progress.MUTED_TEXT}]")
                    ui.label(value).classes("break-all")
            ui.label(t("panel_timeline")).classes("text-base font-semibold")
            with ui.grid(columns="auto 1fr").classes("gap-x-4 gap-y-1 text-sm").mark("panel-timeline"):
                for name, moment in timeline(t, job):
                    ui.label(name)
                    ui.label(moment).classes("tabular-nums")
        self._render_assignments(job.assignments)

    def _actions(self, job: Job) -> None:
        """The row's actions, here too (marked panel-*: the row's own buttons keep their marks)."""
        t, row = self.t, self.row
        with ui.row().classes("gap-2").mark("panel-actions"):
            if not self.ctx.can_write:  # a viewer: the exports only
                self._exports()
                return
            if job.status in (JobStatus.ACTIVE, JobStatus.SCHEDULED):
                ui.button(t("pause"), icon="pause", on_click=row._pause).props("outline dense").mark("panel-pause")
            if job.status is JobStatus.PAUSED:
                ui.button(t("resume"), icon="play_arrow", on_click=row._resume).props("outline dense").mark(
                    "panel-resume")
            if job.failed_count > 0 and job.status in (JobStatus.ACTIVE, JobStatus.PAUSED, JobStatus.INCOMPLETE):
                ui.button(t("retry_failed"), icon="replay", on_click=row._retry).props("outline dense").mark(
                    "panel-retry")
            ui.button(t("run_again"), icon="content_copy", on_click=row._clone).props("outline dense").mark(
                "panel-run-again")
            self._exports()
            if job.status in (JobStatus.ACTIVE, JobStatus.PAUSED, JobStatus.SCHEDULED):
                ui.button(t("cancel_job"), icon="stop", on_click=row.confirm_cancel).props(
                    "outline dense color=negative").mark("panel-cancel")
            ui.button(t("delete"), icon="delete", on_click=row.confirm_delete).props(
                "outline dense color=negative").mark("panel-delete")

    def _exports(self) -> None:
        t, row = self.t, self.row
        ui.button(t("export_csv"), icon="download", on_click=row.export_csv).props("outline dense").mark(
            "panel-export-csv")
        ui.button(t("export_jsonl"), icon="download", on_click=row.export_jsonl).props("outline dense").mark(
            "panel-export-jsonl")

    def _render_assignments(self, assignments: list[Assignment]) -> None:
        t = self.t
        self.device_rows.clear()
        with self.device_rows:
            if not assignments:
                ui.label(t("no_assignments")).classes(f"text-[{job_progress.MUTED_TEXT}]")
                return
            if len(assignments) > DETAIL_MAX_ROWS:
                ui.label(t("panel_first_runs", n=DETAIL_MAX_ROWS, total=len(assignments))).classes("text-sm")
            # A card per run under 600 px (frame.PHONE_TABLES), each value named by its column.
            with ui.element("q-markup-table").props("dense flat").classes("w-full text-sm stack-on-phone"):
                with ui.element("thead"), ui.element("tr"):
                    for key in RUN_COLUMNS:
                        with ui.element("th").classes("text-left"):
                            ui.label(t(key))
                with ui.element("tbody"):
                    for assignment in assignments[:DETAIL_MAX_ROWS]:
                        self._assignment_row(assignment)

    def _assignment_row(self, run: Assignment) -> None:
        t = self.t

        def cell(key: str) -> ui.element:
            td = ui.element("td")
            td.props["data-label"] = t(key)  # names the value on a phone, where the header row is hidden
            return td

        with ui.element("tr").mark(f"assignment-{run.serial}"):
            with ui.element("td").classes("phone-full"):
                ui.link(run.serial, f"/devices/{run.device_id}").classes("font-mono")
            with cell("col_pc"):
                ui.label(run.worker_name or "–")
            with ui.element("td"):
                ui.badge(t(f"run_status_{run.status.value}"), color=None).style(
                    f"background-color: {RUN_BACKGROUNDS[run.status.value]}; color: {job_progress.BADGE_TEXT}")
            with cell("col_attempt"):
                ui.label(str(run.attempt)).classes("tabular-nums")
            with cell("col_start"):
                ui.label(when(run.started_at)).classes("whitespace-nowrap")
            with cell("col_end"):
                ui.label(when(run.finished_at)).classes("whitespace-nowrap")
            with ui.element("td").classes("phone-full"):
                ui.label(run.error or "").classes("text-xs text-[#b91c1c] break-all")
            with ui.element("td"):
                url = screenshots.page_url((run.result or {}).get("evidence_path"))
                if url is not None:
                    self._thumbnail(url, run.serial)

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
