"""Screenshots hub workers uploaded (jobsys_hub.evidence), served to operators only.

Two doors to the same files in `<data dir>/evidence/hub`: the REST API's
`GET /api/runs/{assignment_id}/{attempt}/screenshot` (bearer token, like every /api route;
the URL `GET /api/jobs/{id}` gives as each run's `screenshot_url`), and the dashboard's
`/screenshots/{assignment_id}/{attempt}` for a logged-in browser, which cannot send the
bearer header (the thumbnails). A worker token opens neither. The file's path is built
from two validated integers only, so no request names a path.
"""

from __future__ import annotations

import pathlib
from typing import Annotated, Any

import nicegui
from fastapi import Path
from fastapi.responses import FileResponse, JSONResponse, Response

from jobsys import hub_protocol
from nicegui_app import services

PAGE_URL = "/screenshots/{assignment_id}/{attempt}"
AssignmentId = Annotated[int, Path(ge=1, le=hub_protocol.BIGINT_MAX)]
Attempt = Annotated[int, Path(ge=1, le=hub_protocol.INT_MAX)]
# The browser must take the declared type (an image) and nothing it guesses; the image is
# the operator's own, kept in the browser's private cache only.
HEADERS = {"X-Content-Type-Options": "nosniff", "Cache-Control": "private, max-age=300",
           "Content-Security-Policy": "default-src 'none'"}


def _refused(status: int, code: str, message: str, details: dict[str, Any] | None = None) -> JSONResponse:
    """The API's error shape (nicegui_app.api.errors, which imports the routes that import this)."""
    return JSONResponse({"error": {"code": code, "message": message, "details": details or {}}}, status_code=status)


def screenshot_file(evidence_dir: pathlib.Path | None, assignment_id: int,
                    attempt: int) -> tuple[pathlib.Path, str] | None:
    """The stored file of this run and its content type, or None."""
    if evidence_dir is None or not hub_protocol.valid_run(assignment_id, attempt):
        return None
    for content_type in hub_protocol.EVIDENCE_TYPES:
        path = evidence_dir / hub_protocol.evidence_file_name(assignment_id, attempt, content_type)
        if path.is_file():
            return path, content_type
    return None


def screenshot_response(evidence_dir: pathlib.Path | None, assignment_id: int, attempt: int) -> Response:
    found = screenshot_file(evidence_dir, assignment_id, attempt)
    if found is None:
        return _refused(404, "not_found", "no screenshot of this run",
                              {"assignment_id": assignment_id, "attempt": attempt})
    path, content_type = found
    return FileResponse(path, media_type=content_type, headers=HEADERS)


def page_url(evidence_path: Any) -> str | None:
    """The dashboard's address of a run's screenshot (from its result's evidence_path), or None."""
    parsed = hub_protocol.parse_evidence_uri(evidence_path)
    if parsed is None:
        return None
    return PAGE_URL.format(assignment_id=parsed[0], attempt=parsed[1])


def create() -> None:
    """The dashboard's door, on NiceGUI's side of the app where the browser's session is known."""
    from nicegui_app.pages import guard  # the pages (job_row) import this module

    @nicegui.app.get(PAGE_URL, include_in_schema=False)
    async def dashboard_screenshot(assignment_id: AssignmentId, attempt: Attempt) -> Response:
        if not await guard.check_login():
            return _refused(401, "unauthorized", "log in to the dashboard")
        return screenshot_response(services.get().evidence_dir, assignment_id, attempt)
