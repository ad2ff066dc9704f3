"""What every page needs, created once per process by the server (or a test)."""

from __future__ import annotations

import dataclasses
import pathlib

from jobsys.batch.facade import BatchJobs
from jobsys.system import JobSystem
from nicegui_app.auth import ApiToken
from nicegui_app.hub import EventHub
from nicegui_app.supabase_auth import SupabaseAuth


@dataclasses.dataclass(frozen=True)
class Services:
    """`jobs` is the process's own JobSystem: the push subscription, and every call in
    embedded mode. In Supabase mode (`supabase` set) pages and API requests call as their
    signed-in operator instead (a page's `ctx.services.jobs` is that operator's), and
    `token` is unused: only operators' Supabase accounts get in. `token` is the API token's
    digest (nicegui_app.auth.load_or_create_token), or the token itself ($JOBSYS_API_TOKEN,
    tests); the login page and the session check take either."""

    jobs: JobSystem
    hub: EventHub
    token: ApiToken | str
    supabase: SupabaseAuth | None = None
    evidence_dir: pathlib.Path | None = None  # the hub's screenshots (nicegui_app.screenshots)

    @property
    def batch(self) -> BatchJobs:
        """AI batch jobs on the same transport (a thin wrapper: cheap to make per call)."""
        return BatchJobs.of(self.jobs)


_current: Services | None = None


def install(services: Services) -> None:
    global _current
    _current = services


def get() -> Services:
    if _current is None:
        raise RuntimeError("the dashboard is not set up: call nicegui_app.app.install_pages() first")
    return _current
