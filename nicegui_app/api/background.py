"""The REST API for background AI batch jobs (spec §5): create, read, control, export.

Same conventions as the device-job routes: bearer token on every route, the library's
own models as bodies (BatchCreate refuses unknown fields and checks every limit before any
call), one error shape, and every database call through jobsys.batch.BatchJobs.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Response

from jobsys.batch.facade import BatchJobs
from jobsys.batch.models import (
    LIST_Q_MAX,
    LIST_SORT_PATTERN,
    BatchCreate,
    BatchItemPage,
    BatchJob,
    BatchJobList,
    BatchLogPage,
    BatchStatus,
)
from jobsys.system import JobSystem
from nicegui_app.api.errors import ERROR_RESPONSES
from nicegui_app.api.routes import LIST_LIMIT_MAX, LIST_OFFSET_MAX, PRINTABLE, JobId, require_token
from nicegui_app.batch_export import ExportFormat, export_file

PAGE_LIMIT_MAX = 1000  # the SQL reads refuse more
LOG_ID_MAX = 2**63 - 1  # bigint

TAG = "background jobs"
BY_ID_ERRORS: dict[int | str, dict[str, Any]] = {400: ERROR_RESPONSES[400], 404: ERROR_RESPONSES[404]}


def batch_jobs(jobs: Annotated[JobSystem, Depends(require_token)]) -> BatchJobs:
    return BatchJobs.of(jobs)  # the caller's transport: in Supabase mode, their JWT


Batch = Annotated[BatchJobs, Depends(batch_jobs)]
Limit = Annotated[int, Query(ge=1, le=PAGE_LIMIT_MAX)]
Offset = Annotated[int, Query(ge=0, le=LIST_OFFSET_MAX)]

router = APIRouter(
    prefix="/api/background-jobs",
    tags=[TAG],
    dependencies=[Depends(require_token)],
    responses={401: ERROR_RESPONSES[401], 403: ERROR_RESPONSES[403]},
)


@router.post("", status_code=201, response_model=BatchJob,
             responses={400: ERROR_RESPONSES[400], 422: ERROR_RESPONSES[422]})
async def create_background_job(spec: BatchCreate, batch: Batch, response: Response) -> BatchJob:
    """Store an `ai_batch` job (prompt template with `{field}` placeholders, one item per call);
    a batch runner picks it up. Outputs are drafts for a person to review."""
    job = await batch.create_job(spec)
    response.headers["Location"] = f"/api/background-jobs/{job.id}"
    return job


@router.get("", response_model=BatchJobList, responses={400: ERROR_RESPONSES[400], 422: ERROR_RESPONSES[422]})
async def list_background_jobs(
    batch: Batch,
    status: Annotated[
        list[BatchStatus] | None,
        Query(max_length=len(BatchStatus), description="one or more (repeat it): jobs in any of them"),
    ] = None,
    q: Annotated[
        str | None, Query(max_length=LIST_Q_MAX, pattern=PRINTABLE, description="search in the title")
    ] = None,
    sort: Annotated[
        str, Query(pattern=LIST_SORT_PATTERN, description="a column, - first for descending")
    ] = "-created",
    limit: Annotated[int, Query(ge=1, le=LIST_LIMIT_MAX)] = 100,
    offset: Offset = 0,
) -> BatchJobList:
    """Jobs with their counters in `sort`'s order (newest first by default; rows without a
    value last), `matching` counting those the filters pass, and a summary by status over all
    jobs."""
    return await batch.list_jobs(statuses=status or None, q=q, sort=sort, limit=limit, offset=offset)


@router.get("/{job_id}", response_model=BatchJob, responses=BY_ID_ERRORS)
async def get_background_job(job_id: JobId, batch: Batch) -> BatchJob:
    """One job: counters, progress_percent, timestamps, error, `offline` (placeholder outputs),
    `usage` (tokens over every attempt; retry_* the part spent on attempts whose output was not
    kept), `cost` (estimated USD from the dated price table) and, while pending, `wait_reason`
    (no runner is up, or none can run its provider, e.g. no runner has a Gemini key)."""
    return await batch.get_job(job_id)


@router.get("/{job_id}/logs", response_model=BatchLogPage, responses=BY_ID_ERRORS)
async def background_job_logs(
    job_id: JobId,
    batch: Batch,
    limit: Limit = 100,
    before_id: Annotated[
        int | None, Query(ge=1, le=LOG_ID_MAX, description="next_before_id of the previous page")
    ] = None,
) -> BatchLogPage:
    """Log lines, newest first. Pass `next_before_id` as `before_id` for older lines."""
    return await batch.job_logs(job_id, limit=limit, before_id=before_id)


@router.get("/{job_id}/items", response_model=BatchItemPage, responses=BY_ID_ERRORS)
async def background_job_items(
    job_id: JobId, batch: Batch, status: BatchStatus | None = None, limit: Limit = 100, offset: Offset = 0
) -> BatchItemPage:
    """Items in index order with input, status, draft output, error, attempts, tokens (in, out,
    thinking; over the attempts of the item's latest run) and latency;
    `total` counts the items matching the filter."""
    return await batch.job_items(job_id, status=status, limit=limit, offset=offset)


@router.post(
    "/{job_id}/cancel", response_model=BatchJob, responses={**BY_ID_ERRORS, 409: ERROR_RESPONSES[409]}
)
async def cancel_background_job(job_id: JobId, batch: Batch) -> BatchJob:
    """Stop scheduling at once and cancel calls in flight (pending or running jobs only)."""
    return await batch.cancel_job(job_id)


@router.post(
    "/{job_id}/retry", response_model=BatchJob, responses={**BY_ID_ERRORS, 409: ERROR_RESPONSES[409]}
)
async def retry_background_job(job_id: JobId, batch: Batch) -> BatchJob:
    """Re-queue only the failed items of a completed or failed job; completed outputs stay."""
    return await batch.retry_job(job_id)


@router.get(
    "/{job_id}/export",
    response_class=Response,
    responses={
        **BY_ID_ERRORS,
        200: {
            "description": "The results as a file download",
            "content": {"text/csv": {}, "application/x-ndjson": {}},
        },
    },
)
async def export_background_job(
    job_id: JobId, batch: Batch, format: ExportFormat = ExportFormat.CSV
) -> Response:
    """Every item with its input fields, status, provider and draft output, as CSV (UTF-8 with
    a byte-order mark; a cell starting with `=`, `+`, `-`, `@`, a tab or a carriage return gets a
    leading `'`, so a spreadsheet does not run it) or JSON Lines (values as stored). Offline
    outputs keep `provider = offline`."""
    file = await export_file(batch, job_id, format)
    return Response(
        file.content,
        media_type=file.media_type,
        headers={"Content-Disposition": f'attachment; filename="{file.filename}"'},
    )
