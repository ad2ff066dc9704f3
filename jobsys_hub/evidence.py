"""Screenshots uploaded by hub workers: `PUT /hub/v1/evidence/{assignment_id}/{attempt}`.

A worker sends a run's screenshot with its worker token. The hub checks, before it stores
anything: the token (401), that the run is one of this PC's, read as the worker account
under row level security (403; 409 when the run has moved on to another attempt), the
declared type (415), the size (413, reading no further than the limit) and that the bytes'
magic number matches the declared type (415). The file is written whole or not at all
(temporary file, then rename) as `<data dir>/evidence/hub/<assignment>-<attempt>.<ext>`;
sending it again overwrites it. Operators read it through the dashboard's API
(nicegui_app.screenshots), never here: the hub's routes take worker tokens only. The
screenshots of runs that no longer exist (a deleted job, retention) are swept (`sweep`).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import pathlib
import tempfile
from typing import TYPE_CHECKING, Any

from psycopg import sql
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from jobsys import errors, hub_protocol
from jobsys_hub import app as hub_app  # the hub's module, which imports this one: names used at call time
from jobsys_hub import tokens

if TYPE_CHECKING:
    from jobsys.system import JobSystem
    from jobsys_hub.app import Hub

# Whether the run is this PC's: the assignment row is visible to the account (RLS: its
# device belongs to one of the account's sessions) and was claimed by one of its sessions.
# Its current attempt comes back, to refuse a screenshot of an attempt that has moved on.
OWN_RUN = sql.SQL("select a.attempt from jobsys.job_assignments a "
                  "where a.id = %(assignment_id)s and jobsys.is_own_worker(a.worker_id)")


def _refused(status: int, code: str, message: str, details: dict[str, Any]) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message, "details": details}}, status_code=status)


def too_large() -> JSONResponse:
    return _refused(413, "too_large", "screenshot too large",
                    {"max_bytes": hub_protocol.EVIDENCE_MAX_BYTES})


def unsupported(message: str) -> JSONResponse:
    return _refused(415, "unsupported_media_type", message,
                    {"accepted": sorted(hub_protocol.EVIDENCE_TYPES)})


def _run_of(request: Request) -> tuple[int, int]:
    try:
        assignment_id = int(request.path_params["assignment_id"])
        attempt = int(request.path_params["attempt"])
    except ValueError:
        raise errors.InvalidInput("assignment id and attempt are whole numbers") from None
    if not hub_protocol.valid_run(assignment_id, attempt):
        raise errors.InvalidInput("assignment id or attempt out of range")
    return assignment_id, attempt


async def check_own_run(hub: Hub, token_hash: str, assignment_id: int, attempt: int) -> None:
    """Unauthorized (token), Forbidden (not this PC's run) or StaleRun (another attempt)."""
    rows = await hub.transport.select_as_account(token_hash, OWN_RUN, {"assignment_id": assignment_id})
    if not rows:
        raise errors.Forbidden("not a run of this PC's", {"assignment_id": assignment_id})
    if rows[0]["attempt"] != attempt:
        raise errors.StaleRun("the run has moved on to another attempt",
                              {"assignment_id": assignment_id, "attempt": attempt,
                               "current_attempt": rows[0]["attempt"]})


def write_atomically(directory: pathlib.Path, name: str, body: bytes) -> None:
    """`directory/name` holds `body` whole or keeps what it held: a temporary file in the
    same directory, flushed, then renamed over it. Other types of the same run go (a run
    has one screenshot)."""
    directory.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(dir=directory, prefix=".upload-", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(body)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, directory / name)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
    stem = name.rpartition(".")[0]
    for suffix in hub_protocol.EVIDENCE_TYPES.values():
        if stem + suffix != name:
            with contextlib.suppress(FileNotFoundError):
                (directory / (stem + suffix)).unlink()


def routes(hub: Hub) -> list[Any]:
    async def put_evidence(request: Request) -> Response:
        try:
            token_hash = tokens.presented_digest(request.headers)
            assignment_id, attempt = _run_of(request)
            declared = request.headers.get("content-type", "").split(";")[0].strip().lower()
            if declared not in hub_protocol.EVIDENCE_TYPES:
                return unsupported("send the screenshot as image/png, image/jpeg or image/webp")
            length = request.headers.get("content-length", "")
            if length.isdigit() and int(length) > hub_protocol.EVIDENCE_MAX_BYTES:
                return too_large()
            # Before the body: a caller without a token or a run of its own makes the hub read nothing.
            await check_own_run(hub, token_hash, assignment_id, attempt)
            body = await hub_app.read_body(request, hub_protocol.EVIDENCE_MAX_BYTES)
            if body is None:
                return too_large()
            if hub_protocol.sniff_image(body[:16]) != declared:
                return unsupported(f"the bytes are not {declared}")
            name = hub_protocol.evidence_file_name(assignment_id, attempt, declared)
            await asyncio.to_thread(write_atomically, hub.evidence_dir, name, body)
        except errors.JobsysError as exc:
            return hub_app.error_response(exc)
        return JSONResponse({"uri": hub_protocol.evidence_uri(assignment_id, attempt, declared)})

    path = hub_protocol.EVIDENCE_PATH.removeprefix(hub_protocol.MOUNT)
    return [Route(path, put_evidence, methods=["PUT"])]


SWEEP_CHUNK = 10_000  # ids per existing_runs call (its bound)


async def sweep(jobs: JobSystem, directory: pathlib.Path) -> int:
    """Delete the screenshots of runs that no longer exist (their job was deleted, or purged by
    retention); returns how many files went. Files still being written carry temporary names
    and are left alone."""
    files: dict[int, list[pathlib.Path]] = {}
    if directory.is_dir():
        for path in directory.iterdir():
            run = hub_protocol.evidence_run(path.name)
            if run is not None:
                files.setdefault(run, []).append(path)
    removed = 0
    runs = sorted(files)
    for start in range(0, len(runs), SWEEP_CHUNK):
        chunk = runs[start:start + SWEEP_CHUNK]
        kept = await jobs.existing_runs(chunk)
        for run in chunk:
            if run not in kept:
                for path in files[run]:
                    path.unlink(missing_ok=True)
                    removed += 1
    return removed
