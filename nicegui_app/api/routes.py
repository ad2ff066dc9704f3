"""The REST API for device jobs (spec §5; devices: nicegui_app.api.devices), and what every API router shares: the
bearer token check and job ids (nicegui_app.api adds, last, the route for unknown /api paths
and methods). Every route needs the token; every database call goes through JobSystem, and
bodies are the library's own models.

The token is the API token in embedded mode, and an operator's Supabase access token in
Supabase mode, where the request's calls then run as that operator (RLS applies to them)."""

from __future__ import annotations

import enum
import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, Request, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from jobsys import errors, hub_protocol
from jobsys.auth import WrongRole
from jobsys.operator_accounts import is_operator_token, token_digest
from jobsys.models import (
    TITLE_MAX_CHARS,
    CreatedJob,
    Job,
    JobCreate,
    JobDetail,
    JobList,
    JobStatus,
    JobUpdate,
    RetriedJob,
)
from jobsys.export import job_runs_csv, job_runs_jsonl
from jobsys.system import JobSystem
from nicegui_app import auth, screenshots
from nicegui_app.api.errors import ERROR_RESPONSES, ApiError
from nicegui_app.supabase_auth import SupabaseAuth

LIST_LIMIT_MAX = 1000  # list_jobs refuses more
LIST_OFFSET_MAX = 1_000_000_000  # inside Postgres integer range
SEARCH_MAX_CHARS = TITLE_MAX_CHARS
PRINTABLE = r"^[^\x00-\x1f\x7f]*$"

_bearer = HTTPBearer(auto_error=False, description="The API token (embedded mode) or a Supabase JWT")


def _unauthorized(message: str) -> ApiError:
    return ApiError(401, "unauthorized", message, headers={"WWW-Authenticate": "Bearer"})


async def require_token(
    request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
) -> JobSystem:
    """The caller's JobSystem, once the bearer token checks out. FastAPI runs this once per
    request however many dependencies name it."""
    presented = credentials.credentials if credentials is not None else None
    supabase: SupabaseAuth | None = request.app.state.supabase
    if supabase is None:
        if auth.token_matches(presented, request.app.state.api_token):
            return request.app.state.jobs  # type: ignore[no-any-return]
        if is_operator_token(presented):  # a named account: its calls run with its role
            try:
                session = await request.app.state.jobs.operator_session(token_digest(presented))
            except errors.Unauthorized:
                raise _unauthorized("unknown or revoked account token") from None
            return session.jobs
        raise _unauthorized("missing or wrong bearer token")
    if not presented:
        raise _unauthorized("missing bearer token: send an operator's Supabase access token")
    try:
        return await supabase.caller(presented)
    except WrongRole as exc:
        raise ApiError(403, "forbidden", exc.message) from None
    except errors.Forbidden:  # Supabase Auth did not vouch for it; its message may quote the token's claims
        raise _unauthorized("invalid or expired Supabase access token") from None


def parse_job_id(job_id: Annotated[str, Path(json_schema_extra={"format": "uuid"})]) -> uuid.UUID:
    """Documented as a UUID; anything else is our 400 (invalid_id), not FastAPI's 422."""
    try:
        return uuid.UUID(job_id)
    except ValueError:
        raise ApiError(400, "invalid_id", "job id is not a valid UUID", {"job_id": job_id[:100]}) from None


Jobs = Annotated[JobSystem, Depends(require_token)]
JobId = Annotated[uuid.UUID, Depends(parse_job_id)]

router = APIRouter(
    prefix="/api",
    dependencies=[Depends(require_token)],
    responses={401: ERROR_RESPONSES[401], 403: ERROR_RESPONSES[403]},
)


@router.post(
    "/jobs",
    status_code=201,
    response_model=CreatedJob,
    tags=["device jobs"],
    responses={400: ERROR_RESPONSES[400], 409: ERROR_RESPONSES[409], 422: ERROR_RESPONSES[422]},
)
async def create_job(spec: JobCreate, jobs: Jobs, response: Response) -> CreatedJob:
    """Store a device job and distribute it now; `assigned` is how many devices got it at once."""
    created = await jobs.create_job(spec)
    response.headers["Location"] = f"/api/jobs/{created.job.id}"
    return created


@router.get("/jobs", response_model=JobList, tags=["device jobs"])
async def list_jobs(
    jobs: Jobs,
    status: JobStatus | None = None,
    q: Annotated[
        str | None,
        Query(max_length=SEARCH_MAX_CHARS, pattern=PRINTABLE, description="search in title and URL"),
    ] = None,
    limit: Annotated[int, Query(ge=1, le=LIST_LIMIT_MAX)] = 100,
    offset: Annotated[int, Query(ge=0, le=LIST_OFFSET_MAX)] = 0,
) -> JobList:
    """Jobs with their counters, newest first, and a summary over all jobs."""
    return await jobs.list_jobs(status=status, q=q, limit=limit, offset=offset)


@router.get(
    "/jobs/{job_id}",
    response_model=JobDetail,
    tags=["device jobs"],
    responses={400: ERROR_RESPONSES[400], 404: ERROR_RESPONSES[404]},
)
async def get_job(job_id: JobId, jobs: Jobs) -> JobDetail:
    """One job with its per-device assignments."""
    return await jobs.get_job(job_id)


@router.patch(
    "/jobs/{job_id}",
    response_model=Job,
    tags=["device jobs"],
    responses={
        400: ERROR_RESPONSES[400],
        404: ERROR_RESPONSES[404],
        409: ERROR_RESPONSES[409],
        422: ERROR_RESPONSES[422],
    },
)
async def update_job(job_id: JobId, update: JobUpdate, jobs: Jobs) -> Job:
    """`{"status": "paused" | "active" | "cancelled"}` and/or `{"title": ...}`: the whole body
    is checked first (422), then both change in one transaction (jobsys.update_job), or
    neither (409 for a move the job's status does not allow)."""
    return await jobs.update_job(job_id, update)


@router.delete(
    "/jobs/{job_id}",
    status_code=204,
    response_class=Response,
    tags=["device jobs"],
    responses={400: ERROR_RESPONSES[400], 404: ERROR_RESPONSES[404]},
)
async def delete_job(job_id: JobId, jobs: Jobs) -> Response:
    """Delete the job and its assignments; workers running it are told to stop."""
    await jobs.delete_job(job_id)
    return Response(status_code=204)


@router.post(
    "/jobs/{job_id}/retry",
    response_model=RetriedJob,
    tags=["device jobs"],
    responses={400: ERROR_RESPONSES[400], 404: ERROR_RESPONSES[404], 409: ERROR_RESPONSES[409]},
)
async def retry_job(job_id: JobId, jobs: Jobs) -> RetriedJob:
    """Put the job's failed runs back in the queue (each starts a new attempt series) and
    re-open an `incomplete` job as `active`; `retried` is how many. 409 when nothing failed
    (or the job is completed or cancelled)."""
    return await jobs.retry_job(job_id)


@router.post(
    "/jobs/{job_id}/clone",
    status_code=201,
    response_model=CreatedJob,
    tags=["device jobs"],
    responses={400: ERROR_RESPONSES[400], 404: ERROR_RESPONSES[404], 409: ERROR_RESPONSES[409]},
)
async def clone_job(job_id: JobId, jobs: Jobs, response: Response) -> CreatedJob:
    """A new job with the same settings (URL, duration, target, title, attempts, time limit,
    grace), distributed now; 409 when no healthy device is connected."""
    created = await jobs.clone_job(job_id)
    response.headers["Location"] = f"/api/jobs/{created.job.id}"
    return created


@router.get(
    "/runs/{assignment_id}/{attempt}/screenshot",
    response_class=Response,
    tags=["device jobs"],
    responses={
        404: ERROR_RESPONSES[404],
        422: ERROR_RESPONSES[422],
        200: {"description": "The run's screenshot",
              "content": {content_type: {} for content_type in hub_protocol.EVIDENCE_TYPES}},
    },
)
async def get_run_screenshot(assignment_id: screenshots.AssignmentId, attempt: screenshots.Attempt,
                             request: Request) -> Response:
    """The screenshot a worker PC on the hub uploaded for this run: the `screenshot_url` each
    run has in `GET /api/jobs/{id}`. 404 when there is none (not uploaded yet, or the run's
    evidence is elsewhere: a local path, Supabase Storage)."""
    return screenshots.screenshot_response(request.app.state.evidence_dir, assignment_id, attempt)


class RunExportFormat(str, enum.Enum):
    CSV = "csv"
    JSONL = "jsonl"


@router.get(
    "/jobs/{job_id}/export",
    response_class=Response,
    tags=["device jobs"],
    responses={
        400: ERROR_RESPONSES[400],
        404: ERROR_RESPONSES[404],
        200: {"description": "One row per device run, as a file download",
              "content": {"text/csv": {}, "application/x-ndjson": {}}},
    },
)
async def export_job(job_id: JobId, jobs: Jobs, format: RunExportFormat = RunExportFormat.CSV) -> Response:
    """One row per device run: device serial, worker, status, attempt, started, finished, error,
    evidence path and screenshot URL (hub uploads; relative to this server). CSV is UTF-8 with a byte-order mark, a cell starting with `=`, `+`, `-`,
    `@`, a tab or a carriage return gets a leading `'`; JSON Lines keeps values as stored."""
    rows = await jobs.export_job_runs(job_id)
    if format is RunExportFormat.CSV:
        body, media = job_runs_csv(rows), "text/csv; charset=utf-8"
    else:
        body, media = job_runs_jsonl(rows), "application/x-ndjson"
    return Response(body.encode("utf-8"), media_type=media,
                    headers={"Content-Disposition": f'attachment; filename="job-{job_id}.{format.value}"'})
