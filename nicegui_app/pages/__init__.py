"""Dashboard pages, one module each; `create_all()` registers them with NiceGUI."""

from __future__ import annotations

from nicegui_app.pages import background_jobs, devices, jobs, login, pcs


def create_all() -> None:
    login.create()
    jobs.create()
    devices.create()
    background_jobs.create()
    pcs.create()
