"""Health and readiness for process supervisors and load balancers; no token.

`GET /healthz`: the process answers (no database call). `GET /readyz`: every readiness check
passes: the database answers and has the migrations this jobsys ships, and the push
channels that should be up are (the dashboard's, the hub's listener). 503 names the failing
checks. The answers say nothing but check names and short reasons. Probes, not API: they
are left out of the OpenAPI document (docs/reliability.md describes them).
"""

from __future__ import annotations

import asyncio
from typing import Awaitable, Callable

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from jobsys import errors, migrations
from jobsys.health import Health, Readiness, readiness
from jobsys.system import JobSystem

CHECK_TIMEOUT_S = 3.0

# None when fine, else why not (one short line).
ReadyCheck = Callable[[], Awaitable[str | None]]

router = APIRouter()


def database_check(jobs: JobSystem) -> ReadyCheck:
    """The database answers, with the newest migration this jobsys ships applied."""
    expected = migrations.load_migrations()[-1].version

    async def check() -> str | None:
        try:
            applied = await jobs.schema_version()
        except errors.JobsysError as exc:
            return f"database unavailable: {exc.message}"[:200]
        if applied is None:
            return "no migrations recorded in supabase_migrations.schema_migrations"
        if applied < expected:
            return f"migrations behind: database at {applied}, this jobsys ships {expected} (run jobsys migrate)"
        return None

    return check


async def _run(check: ReadyCheck) -> str | None:
    try:
        async with asyncio.timeout(CHECK_TIMEOUT_S):
            return await check()
    except TimeoutError:
        return f"no answer within {CHECK_TIMEOUT_S:g} s"


@router.get("/healthz", response_model=Health, include_in_schema=False)
async def healthz() -> Health:
    """The process is alive and serving; nothing else is checked."""
    return Health(status="ok")


@router.get("/readyz", response_model=Readiness, include_in_schema=False)
async def readyz(request: Request) -> JSONResponse:
    """Ready to serve: 200 when every check passes, else 503 naming the failing ones."""
    checks: dict[str, ReadyCheck] = request.app.state.ready_checks
    results = await asyncio.gather(*(_run(check) for check in checks.values()))
    body = readiness(dict(zip(checks, results)))
    return JSONResponse(body.model_dump(), status_code=body.http_status)
