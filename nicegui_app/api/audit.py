"""GET /api/audit: the audit log, newest first: every operator action (jobs, devices, PCs,
retention's purges) with who did it, filtered by actor (account id, email or role), object
and time, paged with `before_id`. Operators only, with the same bearer token as every /api
route."""

from __future__ import annotations

import datetime as dt
import re
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query

from jobsys.models import AuditPage
from jobsys.system import JobSystem
from nicegui_app.api.errors import ERROR_RESPONSES, ApiError
from nicegui_app.api.routes import require_token

Jobs = Annotated[JobSystem, Depends(require_token)]
RFC3339 = r"\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})"
ObjectType = Literal["job", "device", "worker_account", "operator_account", "background_job", "system"]

router = APIRouter(prefix="/api", tags=["audit"], dependencies=[Depends(require_token)],
                   responses={401: ERROR_RESPONSES[401], 403: ERROR_RESPONSES[403], 422: ERROR_RESPONSES[422]})


@router.get("/audit", response_model=AuditPage)
async def list_audit(
    jobs: Jobs,
    actor: Annotated[str | None, Query(max_length=320, description="account id, email or role")] = None,
    object_type: ObjectType | None = None,
    object_id: Annotated[str | None, Query(max_length=200)] = None,
    since: Annotated[str | None, Query(description="RFC 3339 time with its zone", max_length=40,
                                       json_schema_extra={"format": "date-time"},
                                       examples=["2026-12-07T09:00:00+09:00"])] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    before_id: Annotated[int | None, Query(ge=1, le=2**62)] = None,
) -> AuditPage:
    """Who did what, newest first; pass the last entry's id as `before_id` for older ones."""
    return await jobs.list_audit(actor=actor, object_type=object_type, object_id=object_id,
                                 since=_time(since), limit=limit, before_id=before_id)


def _time(text: str | None) -> dt.datetime | None:
    """An RFC 3339 date-time (its zone required); a leap second counts as :59."""
    if text is None:
        return None
    match = re.fullmatch(RFC3339, text)
    try:
        if match is None:
            raise ValueError(text)
        return dt.datetime.fromisoformat(re.sub(r"(T\d{2}:\d{2}):60", r"\1:59", text.upper()))
    except ValueError:
        raise ApiError(422, "invalid_input", "since must be an RFC 3339 time with its zone, e.g. "
                       "2026-12-07T09:00:00+09:00", {"field": "since"}) from None
