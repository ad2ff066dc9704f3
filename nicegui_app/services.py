"""What every page needs, created once per process by the server (or a test)."""

from __future__ import annotations

import dataclasses

from jobsys.system import JobSystem
from nicegui_app.hub import EventHub


@dataclasses.dataclass(frozen=True)
class Services:
    jobs: JobSystem
    hub: EventHub
    token: str


_current: Services | None = None


def install(services: Services) -> None:
    global _current
    _current = services


def get() -> Services:
    if _current is None:
        raise RuntimeError("the dashboard is not set up: call nicegui_app.app.install_pages() first")
    return _current
