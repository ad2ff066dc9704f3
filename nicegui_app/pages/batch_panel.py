"""The side panel of one AI batch (a sheet at the right edge), opened from its row: what in
the setup must be fixed and how, settings, timeline, tokens and estimated cost, its actions,
and the log (newest first, coloured by level, each line in the reader's language).

Its contents exist only while it is open; it re-reads the log only when the job changed since
the last read (like the device jobs' panel, job_panel.py).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from nicegui import ui

from jobsys.batch.models import BatchJob, BatchLog, BatchMode, LogLevel
from jobsys.errors import NotFound
from nicegui_app.batch_export import ExportFormat
from nicegui_app.pages import batch_state, job_progress
from nicegui_app.pages.frame import PageContext
from nicegui_app.pages.job_progress import MUTED_TEXT
from nicegui_app.pages.rows import when
from nicegui_app.pages.side_panel import SidePanel

if TYPE_CHECKING:
    from nicegui_app.pages.batch_row import BatchRow

LOG_COLORS = {LogLevel.INFO: "primary", LogLevel.WARNING: "orange-10", LogLevel.ERROR: "negative"}
LOG_TEXT = {LogLevel.INFO: "", LogLevel.WARNING: "text-[#b45309]", LogLevel.ERROR: "text-[#b91c1c]"}
LOG_PAGE = 50  # lines shown when the panel opens; "older" adds as many again
LOG_MAX = 1000  # what one read may return
TEMPLATE_SHOWN = 600  # characters of the template in the settings; the results have the prompts


def usd_text(usd: float) -> str:
    return f"${usd:,.4f}" if usd < 1 else f"${usd:,.2f}"


class BatchPanel(SidePanel):
    """The batch's sheet (side_panel.py); acts through the row."""

    def __init__(self, ctx: PageContext, row: BatchRow) -> None:
        super().__init__(ctx, "batch-panel", "batch-panel")
        self.row = row
        self.log_limit = LOG_PAGE
        with self.sheet:
            self.body = ui.column().classes("w-full gap-3")
            ui.label(self.t("batch_logs")).classes("text-base font-semibold mt-3")
            self.logs = ui.column().classes("w-full gap-0").mark("batch-logs")
            self.older = ui.button(self.t("batch_logs_older"), on_click=self._older).props("flat dense").mark(
                "batch-logs-older")

    async def open(self) -> None:
        self._show(True)
        await self.refresh(force=True)

    def close(self) -> None:
        """A closed panel holds nothing: the next open reads again."""
        self._show(False)
        self.body.clear()
        self.logs.clear()
        self.log_limit = LOG_PAGE
        self._read_version = None

    async def refresh(self, force: bool = False) -> None:
        """Re-read the log if the panel is open and the job changed since the last read; the
        rest is drawn from the job the list read."""
        if not self._due(self.row.job.updated_at, force):
            return
        self._render(self.row.job)
        try:
            page = await self.ctx.services.batch.job_logs(self.row.job.id, limit=self.log_limit)
        except NotFound:
            return  # gone meanwhile: the list refresh removes the row and its panel
        self._render_logs(page.logs)
        self.older.set_visibility(page.next_before_id is not None and self.log_limit < LOG_MAX)

    async def _older(self) -> None:
        self.log_limit = min(self.log_limit + LOG_PAGE, LOG_MAX)
        await self.refresh(force=True)

    # Rendering ----------------------------------------------------------------------------
    def _render(self, job: BatchJob) -> None:
        t = self.t
        self.body.clear()
        with self.body:
            self._header(job.title, t(f"batch_status_{job.status.value}"), batch_state.STATUS_BACKGROUNDS[job.status])
            self._fix(job)
            self._actions(job)
            ui.label(batch_state.counts_text(t, job)).classes("text-sm w-full").mark("batch-panel-counts")
            if job.error_message and batch_state.setup_problem(job) is None:
                ui.label(job.error_message).classes("text-sm text-[#b91c1c] break-all w-full").mark("batch-panel-error")
            self._settings(job)
            ui.label(t("batch_panel_timeline")).classes("text-base font-semibold")
            with ui.grid(columns="auto 1fr").classes("gap-x-4 gap-y-1 text-sm").mark("batch-panel-timeline"):
                for name, moment in self._timeline(job):
                    ui.label(name)
                    ui.label(moment).classes("tabular-nums")
            self._usage(job)

    def _fix(self, job: BatchJob) -> None:
        """What to fix before a retry can help, and how (a missing or rejected key)."""
        problem = batch_state.setup_problem(job)
        if problem is None:
            return
        t = self.t
        with ui.column().classes("w-full gap-1 p-3 rounded border border-[#b91c1c] bg-red-50").mark(
                "batch-panel-fix"):
            ui.label(t(f"batch_fix_{problem}")).classes("font-semibold text-[#b91c1c]")
            ui.label(t(f"batch_fix_{problem}_how")).classes("text-sm w-full break-keep").mark("batch-panel-fix-how")
            if job.can_retry and self.ctx.can_write:  # after the fix, the failed items can go again
                ui.button(t("batch_retry_after_fix"), icon="replay", on_click=self.row.retry).props(
                    "outline dense").mark("batch-panel-retry-after-fix")

    def _actions(self, job: BatchJob) -> None:
        t, row, writer = self.t, self.row, self.ctx.can_write  # a viewer reads and exports only
        with ui.row().classes("gap-2").mark("batch-panel-actions"):
            if writer and batch_state.retry_helps(job):
                ui.button(t("batch_retry"), icon="replay", on_click=row.retry).props("outline dense").mark(
                    "batch-panel-retry")
            ui.button(t("batch_results"), icon="table_view", on_click=row.results).props("outline dense").mark(
                "batch-panel-results")
            for fmt in ExportFormat:
                ui.button(t("results_export", fmt=fmt.value.upper()), icon="download",
                          on_click=lambda fmt=fmt: row.export(fmt)).props("outline dense").mark(
                    f"batch-panel-export-{fmt.value}")
            if writer and job.can_cancel:
                ui.button(t("batch_cancel"), icon="stop", on_click=row.confirm_cancel).props(
                    "outline dense color=negative").mark("batch-panel-cancel")

    def _settings(self, job: BatchJob) -> None:
        t, payload = self.t, job.payload
        ui.label(t("batch_panel_settings")).classes("text-base font-semibold")
        template = payload.template if len(payload.template) <= TEMPLATE_SHOWN else payload.template[:TEMPLATE_SHOWN] + "…"
        mode = "batch_mode_batch_api" if payload.mode is BatchMode.BATCH_API else "batch_mode_standard"
        with ui.grid(columns="auto 1fr").classes("gap-x-4 gap-y-1 text-sm w-full").mark("batch-panel-settings"):
            for name, value in (
                (t("batch_setting_model"), payload.model),
                (t("batch_setting_provider"), t(f"batch_provider_{payload.provider.value}")),
                (t("batch_setting_mode"), t(mode)),
                (t("batch_setting_concurrency"), str(job.concurrency)),
                (t("batch_setting_retries"), f"{job.max_retries} ({job.retry_count})"),
                (t("batch_setting_runner"), job.lease_owner or "–"),
                (t("batch_setting_template"), template),
            ):
                ui.label(name).classes(f"text-[{MUTED_TEXT}]")
                ui.label(value).classes("break-all whitespace-pre-wrap")

    def _timeline(self, job: BatchJob) -> list[tuple[str, str]]:
        t = self.t
        moments = [(t("timeline_created"), when(job.created_at))]
        if job.started_at is not None:
            moments.append((t("timeline_started"), when(job.started_at)))
        if job.completed_at is not None:
            moments.append((t("batch_timeline_ended", status=t(f"batch_status_{job.status.value}")),
                            when(job.completed_at)))
            seconds = batch_state.duration_s(job, job.completed_at)
            if seconds is not None:
                moments.append((t("col_duration"), job_progress.span(t, seconds)))
        return moments

    def _usage(self, job: BatchJob) -> None:
        t, usage, cost = self.t, job.usage, job.cost
        if usage.total == 0:
            return
        ui.label(t("batch_panel_usage")).classes("text-base font-semibold")
        text = t("batch_tokens", total=f"{usage.total:,}", input=f"{usage.input:,}", output=f"{usage.output:,}",
                 thinking=f"{usage.thinking:,}")
        if usage.retry_total:
            text += " · " + t("batch_tokens_retry", n=f"{usage.retry_total:,}")
        ui.label(text).classes("text-sm").mark("batch-tokens")
        if cost.usd is None:
            cost_text = t("batch_cost_unknown")
        else:
            retry = " " + t("batch_cost_retry", usd=usd_text(cost.retry_usd or 0.0)) if cost.retry_usd else ""
            cost_text = t("batch_cost", usd=usd_text(cost.usd)) + retry
        ui.label(cost_text).classes("text-sm").mark("batch-cost").tooltip(t("batch_cost_hint", date=cost.prices_as_of))

    def _render_logs(self, logs: list[BatchLog]) -> None:
        t = self.t
        self.logs.clear()
        with self.logs:
            if not logs:
                ui.label(t("batch_no_logs")).classes(f"text-[{MUTED_TEXT}] text-sm")
            for line in logs:
                with ui.row().classes("w-full items-start gap-2 text-sm no-wrap").mark(f"log-{line.level.value}"):
                    ui.label(when(line.created_at)).classes(f"font-mono text-[{MUTED_TEXT}] shrink-0")
                    ui.badge(t(f"log_{line.level.value}"), color=LOG_COLORS[line.level]).classes("shrink-0")
                    ui.label(batch_state.log_text(t, t.has, line)).classes(  # wraps inside the sheet
                        f"min-w-0 grow break-words break-keep {LOG_TEXT[line.level]}").mark("log-text")
