"""Dashboard pages, one module each; `create_all()` registers them with NiceGUI."""

from __future__ import annotations

from nicegui_app.pages import audit, background_jobs, device_detail, devices, jobs, login, pcs


def create_all() -> None:
    login.create()
    jobs.create()
    devices.create()
    device_detail.create()
    background_jobs.create()
    pcs.create()
    audit.create()
