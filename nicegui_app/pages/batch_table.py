"""The background jobs table: one line per AI batch (batch_row.py), sortable column headers,
a select box per row and for all rows, the bulk bar (cancel / retry the selection after one
confirmation that counts the jobs and items it affects and names the jobs), "25 / 153" and
"더 보기".

The table itself is selectable_table.py's, shared with the device jobs table (the phone
layout, select all, sorting and the bulk flow included); this module says what is the AI
batches': columns, bulk actions, the confirmation's item counts and the calls. A viewer sees
no selection and no bulk bar.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable

from jobsys.batch.models import BatchJob
from nicegui_app.pages import batch_state, selectable_table
from nicegui_app.pages.batch_row import BatchRow
from nicegui_app.pages.selectable_table import BulkAction, SelectableTable, TableText

COLUMNS: selectable_table.Columns = (
    ("col_status", "status"),
    ("col_job", "title"),
    ("col_progress", "progress"),
    ("col_created", "created"),
    ("col_started", "started"),
    ("col_ended", "ended"),
    ("col_duration", "duration"),
    ("col_actions", None),
)
SORT_KEYS = selectable_table.sort_keys(COLUMNS)

BULK_ACTIONS: tuple[BulkAction[BatchJob], ...] = (
    BulkAction("cancel", "stop", lambda job: job.can_cancel, negative=True),
    BulkAction("retry", "replay", batch_state.retry_helps),
)


def parse_sort(value: str | None, default: str) -> str:
    return selectable_table.parse_sort(value, default, SORT_KEYS)


class BatchTable(SelectableTable[BatchJob, BatchRow]):
    ROW = BatchRow
    COLUMNS = COLUMNS
    BULK_ACTIONS = BULK_ACTIONS
    TEXT = TableText(bulk="batch_bulk_", empty="no_batches", count="batch_count", list_mark="batch-list",
                     empty_mark="no-batches", count_mark="batches-count", more_mark="more-batches")

    def _counts(self, action: BulkAction[BatchJob], affected: list[BatchJob]) -> dict[str, int]:
        """The items too: the unfinished ones a cancel stops, the failed ones a retry re-queues."""
        count = batch_state.unfinished if action.key == "cancel" else (lambda job: job.failed_items)
        return {"items": sum(count(job) for job in affected)}

    def _detail(self, job: BatchJob) -> str:
        return self.t("batch_bulk_item", title=job.title, left=batch_state.unfinished(job), failed=job.failed_items)

    def _gone(self, action: BulkAction[BatchJob]) -> str | None:
        return self.t("error_not_found_batch")

    def _call(self, key: str) -> Callable[[uuid.UUID], Awaitable[object]]:
        batch = self.ctx.services.batch
        return {"cancel": batch.cancel_job, "retry": batch.retry_job}[key]
