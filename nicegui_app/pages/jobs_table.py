"""The jobs table: one line per job (job_row.py), sortable column headers, a select box per
row and for all rows, the bulk bar (pause / resume / cancel / delete the selection after one
confirmation that says how many jobs it affects and names them), "25 / 153" and "더 보기".

The table itself is selectable_table.py's, shared with the background jobs table; this module
says what is the device jobs': columns, bulk actions and the calls they make.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable

from jobsys.models import Job, JobStatus
from nicegui_app.pages import selectable_table
from nicegui_app.pages.job_row import CANCELLABLE, PAUSABLE, JobRow
from nicegui_app.pages.selectable_table import BulkAction, SelectableTable, TableText

COLUMNS: selectable_table.Columns = (
    ("col_status", "status"),
    ("col_job", "title"),
    ("col_progress", "progress"),
    ("col_queued", "queued"),
    ("col_priority", "priority"),
    ("col_created", "created"),
    ("col_started", "started"),
    ("col_ended", "ended"),
    ("col_duration", "duration"),
    ("col_actions", None),
)
SORT_KEYS = selectable_table.sort_keys(COLUMNS)

BULK_ACTIONS: tuple[BulkAction[Job], ...] = (
    BulkAction("pause", "pause", lambda job: job.status in PAUSABLE),
    BulkAction("resume", "play_arrow", lambda job: job.status is JobStatus.PAUSED),
    BulkAction("cancel", "stop", lambda job: job.status in CANCELLABLE, negative=True),
    BulkAction("delete", "delete", lambda job: True, negative=True),
)


def parse_sort(value: str | None, default: str) -> str:
    return selectable_table.parse_sort(value, default, SORT_KEYS)


class JobsTable(SelectableTable[Job, JobRow]):
    ROW = JobRow
    COLUMNS = COLUMNS
    BULK_ACTIONS = BULK_ACTIONS
    TEXT = TableText(bulk="bulk_", empty="no_jobs", count="jobs_count", list_mark="job-list",
                     empty_mark="no-jobs", count_mark="jobs-count", more_mark="more-jobs")

    def _gone(self, action: BulkAction[Job]) -> str | None:
        # Deleted elsewhere first: for a delete, what was asked for.
        return None if action.key == "delete" else self.t("bulk_gone")

    def _call(self, key: str) -> Callable[[uuid.UUID], Awaitable[object]]:
        jobs = self.ctx.services.jobs
        return {"pause": jobs.pause_job, "resume": jobs.resume_job, "cancel": jobs.cancel_job,
                "delete": jobs.delete_job}[key]
