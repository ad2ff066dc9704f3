"""The REST API as a FastAPI app; the dashboard mounts NiceGUI beside it (see nicegui_app.app).

The OpenAPI document (/openapi.json) and Swagger UI (/docs) need the bearer token like every
route, unless the docs are public (`public_docs`, `jobsys up|dashboard --public-docs`). The
dashboard serves /docs itself, to a browser logged in to it (nicegui_app.app: a browser
cannot send the bearer header), and leaves it out here (`docs_page=False`)."""

from __future__ import annotations

import pathlib

from fastapi import Depends, FastAPI, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi.security import HTTPBearer
from starlette.types import Receive, Scope, Send

from jobsys.system import JobSystem
from nicegui_app.api import audit, background, devices, health, metrics, worker_accounts
from nicegui_app.api.errors import (
    API_PREFIX,
    ApiError,
    HeadAsGet,
    allowed_methods,
    install_error_handlers,
    request_method,
)
from nicegui_app.api.routes import require_token, router
from nicegui_app.auth import ApiToken
from nicegui_app.supabase_auth import SupabaseAuth

OPENAPI_URL = "/openapi.json"
DOCS_URL = "/docs"

API_DESCRIPTION = (
    "Device jobs, devices and background AI batch jobs of jobsys. "
    "Every request needs `Authorization: Bearer <token>`: the API token in embedded mode, an "
    "operator's Supabase access token in Supabase mode. "
    'Errors are `{"error": {"code", "message", "details"}}`; a rejected request stores nothing.'
)


def create_api_app(
    jobs: JobSystem,
    token: str | ApiToken,
    supabase: SupabaseAuth | None = None,
    *,
    public_docs: bool = False,
    docs_page: bool = True,
    evidence_dir: pathlib.Path | None = None,
    metrics_public: bool = False,
) -> FastAPI:
    """The API alone; tests drive it over ASGI without any dashboard. `token`: the API token,
    or its digest (nicegui_app.auth.ApiToken). With `supabase`, requests authenticate with
    Supabase access tokens instead. `public_docs`: /openapi.json and /docs without a token.
    `docs_page=False`: no /docs here (the dashboard serves it). `evidence_dir`: where the hub
    keeps the screenshots hub workers upload (nicegui_app.screenshots); None: none are served.
    `metrics_public`: GET /metrics without a token (for a scraper on a trusted network)."""
    app = FastAPI(
        title="jobsys",
        version="0.1.0",
        description=API_DESCRIPTION,
        docs_url=None,  # added below, behind the token unless public_docs
        redoc_url=None,
        openapi_url=None,
    )
    app.state.jobs = jobs
    app.state.api_token = ApiToken.of(token)
    app.state.supabase = supabase
    app.state.evidence_dir = evidence_dir
    # GET /readyz runs these; the dashboard and the hub add theirs (nicegui_app.app, jobsys_cli).
    app.state.ready_checks = {"database": health.database_check(jobs)}
    app.state.metrics_public = metrics_public
    app.state.gauges = {}  # name -> (help, read): this process's own gauges on GET /metrics (the hub's)
    install_error_handlers(app)
    app.add_middleware(HeadAsGet)
    _add_docs(app, public=public_docs, page=docs_page)
    app.include_router(health.router)
    app.include_router(metrics.router)
    app.include_router(router)
    app.include_router(devices.router)
    app.include_router(audit.router)
    app.include_router(background.router)
    app.include_router(worker_accounts.router)
    # Last: every /api request no route above takes, whatever its method, so NiceGUI's HTML
    # 404 never answers an /api path.
    for path in (API_PREFIX, API_PREFIX + "/{rest:path}"):
        app.add_route(path, _NoSuchRoute(), include_in_schema=False)  # type: ignore[arg-type]
    return app


def _add_docs(app: FastAPI, *, public: bool, page: bool) -> None:
    guard = [] if public else [Depends(require_token)]

    async def openapi_document() -> JSONResponse:
        return JSONResponse(app.openapi())

    async def swagger_ui() -> HTMLResponse:
        return swagger_page(app, OPENAPI_URL)

    app.add_api_route(OPENAPI_URL, openapi_document, include_in_schema=False, dependencies=guard)
    if page:
        app.add_api_route(DOCS_URL, swagger_ui, include_in_schema=False, dependencies=guard)


def swagger_page(app: FastAPI, openapi_url: str) -> HTMLResponse:
    return get_swagger_ui_html(openapi_url=openapi_url, title=f"{app.title} API")


class _NoSuchRoute:
    """An ASGI app, not a function: Starlette routes a function to GET only, an app to every
    method. 401 without the token, before anything else: a caller without it learns neither
    which paths exist nor which methods they take. Then 405 (with `Allow`) for a path that
    exists, 404 for one that does not."""

    _bearer = HTTPBearer(auto_error=False)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive)
        await require_token(request, await self._bearer(request))
        if allowed_methods(request):
            raise ApiError(405, "method_not_allowed", f"{request_method(request)} is not allowed here")
        raise ApiError(404, "not_found", f"no API route {request.url.path}")
