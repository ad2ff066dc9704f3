"""Putting the dashboard together: the REST API app with NiceGUI mounted beside it.

NiceGUI's pages and the API share one FastAPI app and one server: the API routes come
first (/api/*, /openapi.json) and NiceGUI is mounted at / with `ui.run_with`. NiceGUI is
process-global, so this is done once per process.

The API docs in a browser: /docs is Swagger UI for a browser logged in to the dashboard
(else it redirects to the login page), reading the schema from /docs/openapi.json with the
same session; /openapi.json itself takes the bearer token, as the API does. With
`public_docs`, /docs and /openapi.json need nothing (nicegui_app.api).
"""

from __future__ import annotations

import urllib.parse
from typing import Mapping

import nicegui
from fastapi import FastAPI
from fastapi.responses import JSONResponse, RedirectResponse, Response
from nicegui import ui
from starlette.types import ASGIApp

from nicegui_app import pages, screenshots, services
from nicegui_app.api import DOCS_URL, create_api_app, swagger_page
from nicegui_app.api.errors import error_response
from nicegui_app.api.health import ReadyCheck
from nicegui_app.api.metrics import Gauge
from nicegui_app.hub import EventHub, PushStatus
from nicegui_app.pages import error_pages, guard

PAGE_TITLE = "jobsys"
BROWSER_OPENAPI_URL = DOCS_URL + "/openapi.json"


def install_pages(svc: services.Services) -> None:
    """Register the pages with NiceGUI; they reach the system through `svc`."""
    services.install(svc)
    pages.create_all()
    screenshots.create()


def build_app(svc: services.Services, *, storage_secret: str, public_docs: bool = False,
              mounts: Mapping[str, ASGIApp] | None = None,
              ready_checks: Mapping[str, ReadyCheck] | None = None,
              gauges: Mapping[str, Gauge] | None = None, metrics_public: bool = False) -> FastAPI:
    """`mounts`: other apps served beside the dashboard (the hub at /hub), mounted before
    NiceGUI takes /. `ready_checks`: more checks for GET /readyz (the hub's listener);
    `gauges`: more gauges for GET /metrics (the hub's sockets)."""
    app = create_api_app(svc.jobs, svc.token, svc.supabase, public_docs=public_docs, docs_page=public_docs,
                         evidence_dir=svc.evidence_dir, metrics_public=metrics_public)
    app.state.gauges.update(gauges or {})
    if svc.hub.push:  # a dashboard without push (polling by design) is not unready for it
        app.state.ready_checks["push"] = _push_check(svc.hub)
    app.state.ready_checks.update(ready_checks or {})
    for path, mounted in (mounts or {}).items():
        app.mount(path, mounted)
    install_pages(svc)
    if not public_docs:
        _install_browser_docs(app)
    ui.run_with(app, title=PAGE_TITLE, storage_secret=storage_secret, show_welcome_message=False, favicon="🛰️")
    error_pages.install()
    return app


def _push_check(hub: EventHub) -> ReadyCheck:
    async def check() -> str | None:
        return None if hub.status is PushStatus.CONNECTED else "the dashboard's push channel is reconnecting"
    return check


def _install_browser_docs(api: FastAPI) -> None:
    """On NiceGUI's side of the app, where the browser's session (app.storage.user) is known."""

    @nicegui.app.get(DOCS_URL, include_in_schema=False)
    async def docs() -> Response:
        if not await guard.check_login():
            return RedirectResponse("/login?" + urllib.parse.urlencode({"to": DOCS_URL}), status_code=303)
        return swagger_page(api, BROWSER_OPENAPI_URL)

    @nicegui.app.get(BROWSER_OPENAPI_URL, include_in_schema=False)
    async def openapi_document() -> Response:
        if not await guard.check_login():
            return error_response(401, "unauthorized", "log in to the dashboard, or send the bearer token to "
                                  "/openapi.json", headers={"WWW-Authenticate": "Bearer"})
        return JSONResponse(api.openapi())
