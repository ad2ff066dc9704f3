"""One background job on the page: its progress monitor and controls.

Status badge, "offline" badge when outputs are placeholders, progress bar with %, total /
completed / failed (and cancelled), start time, elapsed time, completion time, error
message, why a pending job waits (no runner can run it), tokens and estimated cost; an expansion with the log (newest first, coloured by level); cancel, retry,
results and export. Updated in place on every refresh (an open log stays open); the
elapsed time of a running job is ticked by the page's local timer, not by re-reading
(rows.py: what every row does).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

from nicegui import ui

from jobsys.batch.models import BatchJob, BatchLog, BatchMode, BatchStatus, LogLevel, WaitReason
from jobsys.errors import NotFound
from nicegui_app.batch_export import ExportFormat
from nicegui_app.pages.batch_results import ResultsDialog, download
from nicegui_app.pages.frame import PageContext
from nicegui_app.pages.rows import ItemRow, when

STATUS_COLORS = {
    BatchStatus.PENDING: "grey",
    BatchStatus.RUNNING: "primary",
    BatchStatus.COMPLETED: "positive",
    BatchStatus.FAILED: "negative",
    BatchStatus.CANCELLED: "grey",
}
LOG_COLORS = {LogLevel.INFO: "primary", LogLevel.WARNING: "orange", LogLevel.ERROR: "negative"}
LOG_TEXT_CLASSES = {LogLevel.INFO: "", LogLevel.WARNING: "text-orange-800", LogLevel.ERROR: "text-negative"}
PROVIDER_BATCH_STATES = {"queued", "running", "succeeded", "partially_succeeded", "failed", "cancelled", "expired"}
LOG_PAGE = 50  # lines shown when the log opens; "older" adds as many again
LOG_MAX = 1000  # what one read may return


def elapsed_text(job: BatchJob, now: dt.datetime | None = None) -> str:
    """H:MM:SS from start to completion (or to now while it runs); "–" before it started."""
    if job.started_at is None:
        return "–"
    end = job.completed_at or now or dt.datetime.now(dt.UTC)
    seconds = max(0, int((end - job.started_at).total_seconds()))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}"


def wait_key(reason: WaitReason) -> str:
    """The i18n key of a wait reason: no runner at all, or none for the job's provider."""
    return "batch_wait_no_runner" if reason.code == "no_runner" else f"batch_wait_{reason.provider}"


def usd_text(usd: float) -> str:
    return f"${usd:,.4f}" if usd < 1 else f"${usd:,.2f}"


class BatchRow(ItemRow[BatchJob]):
    def __init__(self, ctx: PageContext, job: BatchJob, on_change: Callable[[], None]) -> None:
        super().__init__(ctx, job, on_change)
        self.log_limit = LOG_PAGE
        t = self.t
        self.card = ui.card().classes("w-full gap-2").mark(f"batch-{job.id}")
        with self.card:
            with ui.row().classes("w-full items-center gap-2 no-wrap"):
                with ui.column().classes("gap-0 grow min-w-0"):
                    self.title = ui.label().classes("text-lg font-medium break-all").mark("batch-title")
                    self.model = ui.label().classes("text-xs text-gray-500").mark("batch-model")
                self.status = ui.badge().mark("batch-status")
                self.provider_batch = (
                    ui.badge(color="teal").props("outline").tooltip(t("batch_api_hint")).mark("batch-provider-batch")
                )
                self.offline = (
                    ui.badge(t("batch_offline"), color="purple")
                    .props("outline")
                    .tooltip(t("batch_offline_hint"))
                    .mark("batch-offline")
                )
                self.cancel_button = (
                    ui.button(t("batch_cancel"), icon="stop", on_click=self._cancel)
                    .props("flat dense color=negative")
                    .mark("batch-cancel")
                )
                self.retry_button = (
                    ui.button(t("batch_retry"), icon="replay", on_click=self._retry)
                    .props("flat dense")
                    .mark("batch-retry")
                )
                ui.button(t("batch_results"), icon="table_view", on_click=self._results).props(
                    "flat dense"
                ).mark("batch-results")
                export_button = ui.button(t("batch_export"), icon="download").props("flat dense")
                with export_button.mark("batch-export"), ui.menu():
                    for fmt in ExportFormat:
                        ui.menu_item(fmt.value.upper(), on_click=lambda fmt=fmt: self._export(fmt)).mark(
                            f"batch-export-{fmt.value}"
                        )
            with ui.row().classes("w-full items-center gap-2 no-wrap"):
                self.bar = ui.linear_progress(show_value=False, size="10px").classes("grow").mark("batch-bar")
                self.percent = ui.label().classes("font-medium w-12 text-right").mark("batch-percent")
            with ui.row().classes("w-full gap-4 text-sm"):
                self.total = ui.label().mark("batch-total")
                self.completed = ui.label().classes("text-positive").mark("batch-completed")
                self.failed = ui.label().classes("text-negative").mark("batch-failed")
                self.cancelled = ui.label().classes("text-gray-600").mark("batch-cancelled")
            with ui.row().classes("w-full gap-4 text-sm text-gray-600"):
                self.started = ui.label().mark("batch-started")
                self.elapsed = ui.label().mark("batch-elapsed")
                self.finished = ui.label().mark("batch-finished")
            self.error = ui.label().classes("text-negative text-sm break-all").mark("batch-error")
            with ui.row().classes("items-center gap-1 text-sm text-orange-800").mark("batch-wait") as self.wait:
                ui.icon("hourglass_empty")
                self.wait_text = ui.label().mark("batch-wait-text")
                self.wait.tooltip(t("batch_wait_hint"))
            with ui.row().classes("w-full gap-4 text-sm text-gray-600"):
                self.tokens = ui.label().mark("batch-tokens")
                self.cost = ui.label().mark("batch-cost")
                with self.cost:
                    self.cost_tooltip = ui.tooltip("")
            self.logs_expansion = (
                ui.expansion(t("batch_logs"), on_value_change=self._logs_opened)
                .classes("w-full")
                .mark("batch-logs")
            )
            with self.logs_expansion:
                self.logs = ui.column().classes("w-full gap-0")
                self.older = (
                    ui.button(t("batch_logs_older"), on_click=self._older_logs)
                    .props("flat dense")
                    .mark("batch-logs-older")
                )
        self.update(job)

    def update(self, job: BatchJob) -> None:
        t = self.t
        self.job = job
        self.title.set_text(job.title)
        self.model.set_text(job.payload.model)
        self.status.set_text(t(f"batch_status_{job.status.value}"))
        self.status.props(f"color={STATUS_COLORS[job.status]}")
        self.offline.set_visibility(job.offline)
        self.bar.set_value(job.progress_percent / 100)
        self.percent.set_text(f"{job.progress_percent}%")
        self.total.set_text(t("batch_total", n=job.total_items))
        self.completed.set_text(t("batch_completed", n=job.completed_items))
        self.failed.set_text(t("batch_failed", n=job.failed_items))
        self.cancelled.set_text(t("batch_cancelled", n=job.cancelled_items))
        self.cancelled.set_visibility(job.cancelled_items > 0)
        self.started.set_text(t("batch_started", at=when(job.started_at)))
        self.finished.set_text(t("batch_finished", at=when(job.completed_at)))
        self.finished.set_visibility(job.completed_at is not None)
        self.error.set_text(job.error_message or "")
        self.error.set_visibility(bool(job.error_message))
        reason = job.wait_reason if job.status is BatchStatus.PENDING else None
        self.wait.set_visibility(reason is not None)
        if reason is not None:
            known = reason.code == "no_runner" or reason.provider in ("gemini", "openai_compatible")
            self.wait_text.set_text(t(wait_key(reason)) if known else reason.message)
        self._show_usage(job)
        self._show_provider_batch(job)
        self.cancel_button.set_visibility(job.can_cancel)
        self.retry_button.set_visibility(job.can_retry)
        self.tick()

    def _show_provider_batch(self, job: BatchJob) -> None:
        """Batch API mode: the provider batch's state (queued, running, ... expired)."""
        self.provider_batch.set_visibility(job.payload.mode is BatchMode.BATCH_API)
        if job.payload.mode is not BatchMode.BATCH_API:
            return
        recorded = job.result.get("provider_batch")
        state = recorded.get("state") if isinstance(recorded, dict) else None
        known = state in PROVIDER_BATCH_STATES
        label = self.t(f"batch_api_state_{state}") if known else (state or self.t("batch_api_not_submitted"))
        self.provider_batch.set_text(self.t("batch_api_badge", state=label))

    def _show_usage(self, job: BatchJob) -> None:
        t, usage, cost = self.t, job.usage, job.cost
        self.tokens.set_visibility(usage.total > 0)
        self.cost.set_visibility(usage.total > 0)
        if usage.total == 0:
            return
        text = t("batch_tokens", total=f"{usage.total:,}", input=f"{usage.input:,}", output=f"{usage.output:,}",
                 thinking=f"{usage.thinking:,}")
        if usage.retry_total:
            text += " · " + t("batch_tokens_retry", n=f"{usage.retry_total:,}")
        self.tokens.set_text(text)
        if cost.usd is None:
            self.cost.set_text(t("batch_cost_unknown"))
        else:
            retry = " " + t("batch_cost_retry", usd=usd_text(cost.retry_usd or 0.0)) if cost.retry_usd else ""
            self.cost.set_text(t("batch_cost", usd=usd_text(cost.usd)) + retry)
        self.cost_tooltip.set_text(t("batch_cost_hint", date=cost.prices_as_of))

    def tick(self, now: dt.datetime | None = None) -> None:
        """Move the elapsed time on (the page's per-client timer calls this every second)."""
        self.elapsed.set_text(self.t("batch_elapsed", time=elapsed_text(self.job, now)))

    @property
    def ticking(self) -> bool:
        return self.job.started_at is not None and self.job.completed_at is None

    # Logs -----------------------------------------------------------------------------------
    async def refresh_logs(self, force: bool = False) -> None:
        """Re-read the log if it is open and the job changed since the last read."""
        if not self._due(self.logs_expansion, force):
            return
        try:
            page = await self.ctx.services.batch.job_logs(self.job.id, limit=self.log_limit)
        except NotFound:
            return  # gone meanwhile: the list refresh removes the row
        self._render_logs(page.logs)
        self.older.set_visibility(page.next_before_id is not None and self.log_limit < LOG_MAX)

    async def _logs_opened(self) -> None:
        await self.refresh_logs(force=True)

    async def _older_logs(self) -> None:
        self.log_limit = min(self.log_limit + LOG_PAGE, LOG_MAX)
        await self.refresh_logs(force=True)

    def _render_logs(self, logs: list[BatchLog]) -> None:
        self.logs.clear()
        with self.logs:
            if not logs:
                ui.label(self.t("batch_no_logs")).classes("text-gray-500 text-sm")
            for line in logs:
                with (
                    ui.row()
                    .classes("w-full items-start gap-2 text-sm no-wrap")
                    .mark(f"log-{line.level.value}")
                ):
                    ui.label(when(line.created_at)).classes("font-mono text-gray-500 shrink-0")
                    ui.badge(self.t(f"log_{line.level.value}"), color=LOG_COLORS[line.level]).classes(
                        "shrink-0"
                    )
                    ui.label(line.message).classes(f"break-all {LOG_TEXT_CLASSES[line.level]}")

    # Actions ----------------------------------------------------------------------------------
    async def _cancel(self) -> None:
        await self._act(self.ctx.services.batch.cancel_job, "batch_cancel_done")

    async def _retry(self) -> None:
        await self._act(self.ctx.services.batch.retry_job, "batch_retry_done")

    async def _results(self) -> None:
        await ResultsDialog(self.ctx, self.job).run()

    async def _export(self, fmt: ExportFormat) -> None:
        await download(self.ctx, self.job.id, fmt)
