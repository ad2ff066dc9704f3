"""The dashboard in Supabase mode, for page tests: our PostgREST and Realtime doubles on the
real test database plus our GoTrue double, the Services `jobsys dashboard` builds when
SUPABASE_URL is set, and NiceGUI's simulated user on them."""

from __future__ import annotations

import contextlib
import dataclasses
from typing import AsyncIterator

import pytest
from nicegui.testing import User, user_simulation

from jobsys.auth import Credentials, JobsysRole
from jobsys.connect import connect_dashboard_from_env, connect_supabase
from jobsys.events import ChannelState
from jobsys.system import JobSystem
from nicegui_app.hub import EventHub
from nicegui_app.services import Services
from nicegui_app.supabase_auth import SupabaseAuth
from tests.dashboard import context
from tests.dashboard.conftest import MAIN_FILE
from tests.dashboard.supabase_auth_double import AuthDouble
from tests.support.waiting import wait_until
from tests.transport.conftest import FAST_REALTIME, SupabaseDoubles, start_doubles
from tests.transport.tokens import ANON

OPERATOR = Credentials("ops@example.test", "operator-pw")
DASHBOARD = Credentials("dashboard@example.test", "dashboard-pw")  # the process's own account, for Realtime
WORKER = Credentials("pc-01@example.test", "worker-pw")
NO_ROLE = Credentials("someone@example.test", "someone-pw")


@dataclasses.dataclass
class SupabaseDashboard:
    doubles: SupabaseDoubles
    auth: AuthDouble
    supabase: SupabaseAuth
    services: Services

    @property
    def hub(self) -> EventHub:
        return self.services.hub

    def calls_by(self, function: str) -> set[str]:
        """The bearer tokens PostgREST saw on calls of this function."""
        return {c.headers["authorization"].removeprefix("Bearer ") for c in self.doubles.postgrest.calls
                if c.function == function}


async def _process_jobs(doubles: SupabaseDoubles, push: bool) -> JobSystem:
    if push:  # an operator account of its own: joins the private dashboard topic
        return await connect_supabase(doubles.url, ANON.token, credentials=DASHBOARD, role=JobsysRole.OPERATOR,
                                      realtime=FAST_REALTIME)
    # No account: what `jobsys dashboard` builds without JOBSYS_EMAIL / JOBSYS_PASSWORD.
    return await connect_dashboard_from_env(env={"SUPABASE_URL": doubles.url, "SUPABASE_ANON_KEY": ANON.token})


@contextlib.asynccontextmanager
async def supabase_dashboard(db_url: str, *, push: bool = True) -> AsyncIterator[SupabaseDashboard]:
    async with start_doubles(db_url) as doubles:
        auth = AuthDouble(doubles.router)
        auth.add(OPERATOR.email, OPERATOR.password, "operator")
        auth.add(DASHBOARD.email, DASHBOARD.password, "operator")
        auth.add(WORKER.email, WORKER.password, "worker")
        auth.add(NO_ROLE.email, NO_ROLE.password, None)
        process = await _process_jobs(doubles, push)
        hub = EventHub(push=process.transport.supports_push)  # as nicegui_app.server.serve does
        subscription = await process.subscribe_dashboard(hub.publish, hub.set_state)
        if push:
            await wait_until(lambda: hub.state is ChannelState.SUBSCRIBED, what="dashboard push channel")
        supabase = await SupabaseAuth.connect(doubles.url, ANON.token)
        services = Services(jobs=process, hub=hub, token="", supabase=supabase)
        context.current = services
        try:
            yield SupabaseDashboard(doubles, auth, supabase, services)
        finally:
            context.current = None
            await subscription.close()
            await supabase.close()
            await process.close()


@contextlib.asynccontextmanager
async def simulated_user(caplog: pytest.LogCaptureFixture) -> AsyncIterator[User]:
    """NiceGUI's simulated user on the installed Services; fails on ERROR logs, as the
    dashboard's `user` fixture does, except realtime-py's own: it logs a dropped socket at
    ERROR, and tests drop sockets on purpose (the watchdog rejoins)."""
    async with user_simulation(main_file=MAIN_FILE) as simulated:
        yield simulated
    errors = [r for r in caplog.get_records("call")
              if r.levelname == "ERROR" and not r.name.startswith("realtime")]
    assert not errors, f"unexpected ERROR logs: {[r.getMessage() for r in errors]}"


async def log_in(user: User, credentials: Credentials, path: str = "/", language: str = "en") -> None:
    """Fill in the login form (the caller checks where it leads)."""
    user.http_client.headers["Accept-Language"] = language
    await user.open(path)
    await user.should_see(marker="email", retries=50)
    user.find(marker="email").type(credentials.email)
    user.find(marker="password").type(credentials.password)
    user.find(marker="login").click()
