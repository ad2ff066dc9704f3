"""Putting the dashboard together: the REST API app with NiceGUI mounted beside it.

NiceGUI's pages and the API share one FastAPI app and one server: the API routes come
first (/api/*, /docs, /openapi.json) and NiceGUI is mounted at / with `ui.run_with`.
NiceGUI is process-global, so this is done once per process.
"""

from __future__ import annotations

from fastapi import FastAPI
from nicegui import ui

from nicegui_app import pages, services
from nicegui_app.api import create_api_app

PAGE_TITLE = "jobsys"


def install_pages(svc: services.Services) -> None:
    """Register the pages with NiceGUI; they reach the system through `svc`."""
    services.install(svc)
    pages.create_all()


def build_app(svc: services.Services, *, storage_secret: str) -> FastAPI:
    app = create_api_app(svc.jobs, svc.token, svc.supabase)
    install_pages(svc)
    ui.run_with(app, title=PAGE_TITLE, storage_secret=storage_secret, show_welcome_message=False, favicon="🛰️")
    return app
