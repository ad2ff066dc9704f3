"""The REST API as a FastAPI app; the dashboard mounts NiceGUI beside it (see nicegui_app.app)."""

from __future__ import annotations

from fastapi import FastAPI

from jobsys.system import JobSystem
from nicegui_app.api import background
from nicegui_app.api.errors import install_error_handlers
from nicegui_app.api.routes import fallback_router, router
from nicegui_app.supabase_auth import SupabaseAuth

API_DESCRIPTION = (
    "Device jobs, devices and background AI batch jobs of jobsys. "
    "Every request needs `Authorization: Bearer <token>`: the API token in embedded mode, an "
    "operator's Supabase access token in Supabase mode. "
    'Errors are `{"error": {"code", "message", "details"}}`; a rejected request stores nothing.'
)


def create_api_app(jobs: JobSystem, token: str, supabase: SupabaseAuth | None = None) -> FastAPI:
    """The API alone (OpenAPI at /docs); tests drive it over ASGI without any dashboard.
    With `supabase`, requests authenticate with Supabase access tokens instead of `token`."""
    app = FastAPI(
        title="jobsys",
        version="0.1.0",
        description=API_DESCRIPTION,
        docs_url="/docs",
        redoc_url=None,
        openapi_url="/openapi.json",
    )
    app.state.jobs = jobs
    app.state.api_token = token
    app.state.supabase = supabase
    install_error_handlers(app)
    app.include_router(router)
    app.include_router(background.router)
    app.include_router(fallback_router(router, background.router))  # last: it matches every /api path
    return app
