"""Results of one batch for review: every item's input, status, provider and draft output,
paged, with the export buttons. Outputs are drafts a person reviews; offline outputs are
placeholders and the dialog says so."""

from __future__ import annotations

import json
import uuid
from typing import Any

from nicegui import ui

from jobsys.batch.models import BatchItem, BatchJob, BatchStatus
from jobsys.errors import JobsysError
from nicegui_app.batch_export import ExportFormat, export_file
from nicegui_app.pages.dialog import answer
from nicegui_app.pages.frame import PageContext
from nicegui_app.pages.rows import status_filter
from nicegui_app.server_errors import error_text

PAGE_ITEMS = 50
INPUT_MAX_CHARS = 300  # the table shows the start of a long input; the export has all of it
TEXT_COLUMN_MIN = "14rem"


async def download(ctx: PageContext, job_id: uuid.UUID, fmt: ExportFormat) -> None:
    """Send the results file to this browser (built here: the browser has no API token)."""
    try:
        file = await export_file(ctx.services.batch, job_id, fmt)
    except JobsysError as exc:
        ui.notify(error_text(ctx.t, exc), type="warning")
        return
    ui.download.content(file.content, file.filename, file.media_type)


def _tokens_text(item: BatchItem) -> str:
    """in / out / thinking over the item's attempts; empty when the provider reported none."""
    if item.tokens_in is None and item.tokens_out is None:
        return ""
    return f"{item.tokens_in or 0:,} / {item.tokens_out or 0:,} / {item.tokens_thinking or 0:,}"


def _input_text(item: BatchItem) -> str:
    text = json.dumps(item.input, ensure_ascii=False)
    return text if len(text) <= INPUT_MAX_CHARS else text[:INPUT_MAX_CHARS] + "…"


class ResultsDialog:
    def __init__(self, ctx: PageContext, job: BatchJob) -> None:
        self.ctx = ctx
        self.job = job
        self.offset = 0
        t = ctx.t
        # Text columns keep a readable width: on a phone the table scrolls sideways instead of
        # squeezing a draft to one word per line.
        columns: list[dict[str, Any]] = [
            {"name": name, "label": t(f"results_{name}"), "field": name, "align": "left",
             **({"style": f"min-width: {TEXT_COLUMN_MIN}", "headerStyle": f"min-width: {TEXT_COLUMN_MIN}"}
                if name in ("input", "output", "error")
                else {"style": "white-space: nowrap", "headerStyle": "white-space: nowrap"})}
            for name in ("idx", "status", "provider", "input", "output", "error", "tokens")
        ]
        with ui.dialog() as self.dialog, ui.card().classes("w-[72rem] max-w-full gap-3"):
            ui.label(t("results_title", title=job.title)).classes("text-xl font-semibold break-all")
            ui.label(t("batch_draft_note")).classes("text-sm text-gray-600 break-keep")
            if job.offline:
                ui.label(t("results_offline")).classes("text-sm text-purple-800 break-keep").mark("results-offline")
            with ui.row().classes("w-full items-end gap-2"):
                statuses = {s.value: t(f"batch_status_{s.value}") for s in BatchStatus}
                self.status = status_filter(t, statuses, self._filter, "results-status")
                ui.space()
                for fmt in ExportFormat:
                    ui.button(
                        t("results_export", fmt=fmt.value.upper()),
                        icon="download",
                        on_click=lambda fmt=fmt: download(ctx, job.id, fmt),
                    ).props("flat").mark(f"results-export-{fmt.value}")
            self.table = (
                ui.table(columns=columns, rows=[], row_key="idx")
                .props("wrap-cells dense flat")
                .classes("w-full")
                .mark("results-table")
            )
            with ui.row().classes("w-full items-center justify-end gap-2"):
                self.previous = (
                    ui.button(icon="chevron_left", on_click=lambda: self._page(-1))
                    .props("flat dense")
                    .mark("results-previous")
                )
                self.range = ui.label().classes("text-sm").mark("results-range")
                self.next = (
                    ui.button(icon="chevron_right", on_click=lambda: self._page(1))
                    .props("flat dense")
                    .mark("results-next")
                )
                ui.button(t("close"), on_click=lambda: self.dialog.submit(None)).props("flat").mark(
                    "results-close"
                )

    async def load(self) -> None:
        t = self.ctx.t
        try:
            page = await self.ctx.services.batch.job_items(
                self.job.id, status=self.status.value or None, limit=PAGE_ITEMS, offset=self.offset
            )
        except JobsysError as exc:
            ui.notify(error_text(t, exc), type="warning")
            return
        self.table.rows = [
            {
                "idx": item.idx,
                "status": t(f"batch_status_{item.status.value}"),
                "provider": item.provider or "",
                "input": _input_text(item),
                "output": item.output or "",
                "error": item.error or "",
                "tokens": _tokens_text(item),
            }
            for item in page.items
        ]
        self.table.update()
        last = self.offset + len(page.items)
        self.range.set_text(
            t("results_range", first=self.offset + 1 if page.items else 0, last=last, total=page.total)
        )
        self.previous.set_enabled(self.offset > 0)
        self.next.set_enabled(last < page.total)

    async def _filter(self) -> None:
        self.offset = 0
        await self.load()

    async def _page(self, step: int) -> None:
        self.offset = max(0, self.offset + step * PAGE_ITEMS)
        await self.load()

    async def run(self) -> None:
        await self.load()
        await answer(self.dialog)
